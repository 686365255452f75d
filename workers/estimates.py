"""One cost estimate per job, and everything that needs one: admission, the job timeout, the ETAs.

``job_cost`` counts the U-Net evaluations a job needs from the bundle's geometry (the one
``MamboGeometry.plan``), the steps, the count and the share of tiles that are background (skipped);
``work`` is the same count in 256 x 256-tile equivalents, which is what time scales with. Seconds
come from ``seconds_per_work``: measured on this queue's finished jobs (run time / recorded work),
or, before any job finished, the conservative default of the slowest supported device. The API
refuses a job whose cost is over the per-request limit or whose estimated run is longer than the
job timeout; a queued job's ETA is the estimated work ahead of it, shared by the live workers, plus
its own; a running job's is its remaining work when it has not reported one itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from workers.job_requests import GenerateJob, InsertLesionJob, SuperResolveJob
from workers.job_requests import Job as JobRequest
from workers.queueing import SERIALIZER
from workers.watchdog import live_workers

#: Seconds per 256 x 256 evaluation on the slowest supported device (paper U-Net on 2 CPU cores).
DEFAULT_SECONDS_PER_WORK = 1.5
#: Share of stage-2/3 tiles outside the breast, skipped, when the input is not known yet (generation):
#: the procedural phantoms leave ~48% of patch tiles empty; 0.4 keeps the estimate on the safe side.
GENERATION_BACKGROUND_SHARE = 0.4
#: Tiles that touch the breast exceed the breast's pixel share (tiles straddle its edge).
EDGE_TILE_MARGIN = 0.1
#: Fixed per-job seconds beyond the model calls: warm-up, file writing, DICOM encoding.
BASE_SECONDS = 120
#: Headroom of a job's RQ timeout over its estimate (a busy host, a slower device).
TIMEOUT_SAFETY = 4.0


@dataclass(frozen=True)
class JobCost:
    evaluations: int  # U-Net evaluations at the bundle's tile size
    work: float  # the same in 256 x 256-tile equivalents

    def seconds(self, seconds_per_work: float) -> float:
        return self.work * seconds_per_work

    def to_dict(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations, "work": round(self.work, 3)}


def _active(n: int, background_share: float) -> int:
    return max(1, math.ceil(n * (1.0 - background_share))) if n else 0


def job_cost(job: JobRequest, geometry: dict[str, Any] | None, *, breast_fraction: float | None = None) -> JobCost:
    """Upper-leaning estimate of a job's model evaluations; ``breast_fraction`` is the measured share of
    an uploaded image inside the breast (unknown for generation)."""
    from models.geometry import MamboGeometry

    g = geometry or {}
    options = job.request.options
    steps, count = options.steps, len(options.seeds)
    if isinstance(job, GenerateJob) and job.request.model == "dualview":
        size = g.get("size") or g.get("s") or 256  # dual-view bundles record their pair size as "size"
        h, w = (size, size) if isinstance(size, int | float) else (size[0], size[1])
        evaluations = steps * count
        return JobCost(evaluations, evaluations * float(h) * float(w) / 256**2)
    geo = MamboGeometry.from_dict(
        {"s": 256, "k": 3, "overlap": 32, **{k: g[k] for k in ("s", "k", "overlap") if k in g}}
    )
    background = (
        GENERATION_BACKGROUND_SHARE
        if breast_fraction is None
        else max(0.0, 1.0 - min(1.0, breast_fraction + EDGE_TILE_MARGIN))
    )
    if isinstance(job, GenerateJob):
        native = g.get("native_size") or (geo.k * geo.s, geo.k * geo.s)
        h, w = job.request.height or int(native[0]), job.request.width or int(native[1])
        per_step = 1 + _tiles(geo, h, w, background, local=True)  # global + local + patches
        per_step += len(job.request.lesions) * _guided(options)  # one window per lesion, after generation
        evaluations = steps * count * per_step
    elif isinstance(job, SuperResolveJob):
        h, w = job.request.target_size(job.upload.height, job.upload.width)
        # stage 2 counted too: the "global" stand-in runs it, the cheaper "mid" one does not
        evaluations = steps * _tiles(geo, h, w, background, local=True)
    elif isinstance(job, InsertLesionJob):
        evaluations = steps * len(job.request.lesions) * _guided(options)  # one s x s window per lesion
    else:
        remaining = math.ceil(steps * job.request.lam / 1000)  # denoised from lambda only
        h, w = job.upload.height, job.upload.width
        per_seed = 1 if job.request.resolution == "global" else _tiles(geo, h, w, background)
        evaluations = remaining * count * per_seed
    return JobCost(evaluations, evaluations * (geo.s / 256) ** 2)


def _guided(options: Any) -> int:
    """Network evaluations per window: classifier-free guidance runs the conditional and the unconditional."""
    return 2 if options.guidance_scale != 1.0 else 1


def _tiles(geo: Any, h: int, w: int, background: float, local: bool = False) -> int:
    """Active stage-3 tiles (and stage-2 ones with ``local``) of an h x w output."""
    if min(h, w) < geo.s:
        return 1
    plan = geo.plan(h, w)
    return _active(plan.patch_grid.n, background) + (_active(plan.local_grid.n, background) if local else 0)


def job_timeout_s(cost: JobCost, cap_s: int) -> int:
    """The RQ timeout: the estimate on the slowest device with headroom, at most the configured cap.
    (RQ's 180 s default kills real generations, rq #1222; one large fixed timeout lets a hung tiny
    job hold a worker for hours.)"""
    return int(min(cap_s, BASE_SECONDS + TIMEOUT_SAFETY * cost.seconds(DEFAULT_SECONDS_PER_WORK)))


# ---- calibration and ETAs --------------------------------------------------------------------
def _work_of(job: Job | None) -> float | None:
    estimate = (job.meta or {}).get("estimate") if job is not None else None
    return float(estimate["work"]) if isinstance(estimate, dict) and estimate.get("work") else None


def seconds_per_work(queue: Queue, sample: int = 20) -> float:
    """Measured on the last ``sample`` finished jobs of this queue (run time / estimated work), else the
    default: the ETAs and the admission check follow the devices this queue really runs on."""
    registry = FinishedJobRegistry(queue.name, connection=queue.connection, serializer=SERIALIZER)
    ids = registry.get_job_ids(0, sample - 1, desc=True, cleanup=False)
    run = work = 0.0
    for job in Job.fetch_many(ids, connection=queue.connection, serializer=SERIALIZER):
        w = _work_of(job)
        if job is not None and w and job.started_at and job.ended_at:
            run += (job.ended_at - job.started_at).total_seconds()
            work += w
    return run / work if work > 0 else DEFAULT_SECONDS_PER_WORK


def remaining_work(job: Job) -> float:
    """A running job's estimated work not yet done, from the fraction it reported."""
    fraction = float(((job.meta or {}).get("progress") or {}).get("fraction") or 0.0)
    return (_work_of(job) or 0.0) * max(0.0, 1.0 - fraction)


def queued_eta_seconds(queue: Queue, job: Job, position: int) -> float:
    """Until a queued job is done: the work ahead of it (queued and still running) shared by the live
    workers, then its own."""
    conn = queue.connection
    ahead_ids = queue.get_job_ids(0, position) if position > 0 else []  # (offset, length)
    ahead = sum(_work_of(j) or 0.0 for j in Job.fetch_many(ahead_ids, connection=conn, serializer=SERIALIZER))
    running_ids = StartedJobRegistry(queue.name, connection=conn, serializer=SERIALIZER).get_job_ids(cleanup=False)
    running = sum(
        remaining_work(j) for j in Job.fetch_many(running_ids, connection=conn, serializer=SERIALIZER) if j is not None
    )
    workers = max(1, len(live_workers(conn, queue.name)))
    own = _work_of(job) or 0.0
    return round(seconds_per_work(queue) * ((ahead + running) / workers + own), 1)


def retry_after_seconds(queue: Queue, default: int = 10, cap: int = 600) -> int:
    """When a full queue is likely to have room again: the running jobs' remaining work per worker."""
    conn = queue.connection
    running_ids = StartedJobRegistry(queue.name, connection=conn, serializer=SERIALIZER).get_job_ids(cleanup=False)
    jobs = [j for j in Job.fetch_many(running_ids, connection=conn, serializer=SERIALIZER) if j is not None]
    remaining = [remaining_work(j) for j in jobs if _work_of(j)]
    if not remaining:
        return default
    return int(min(cap, max(1, round(seconds_per_work(queue) * min(remaining)))))
