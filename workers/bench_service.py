"""``mammogen bench service``: the served path timed end to end, one worker process per acceleration.

Each setting gets its own real worker process (its own queue, the same Redis and bundles), started
with ``MAMMOGEN_ACCELERATION`` (and ``MAMMOGEN_TORCH_THREADS``) set; all are started first and warmed
(start-up to ready is reported), then the same typed job goes through the queue to each in turn,
round-robin for ``repeats`` rounds, so load drift hits every setting alike. Per setting: median
seconds from submit to finished (what a user waits), the worker's CPU seconds for the job (robust to
other load), both as ratios against the first setting, and the pixel difference of its images from
the first setting's. The caller passes the worker command, so this module imports nothing from `app`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from redis import Redis

from workers.job_requests import GenerateJob
from workers.queueing import make_queue, worker_alive_key
from workers.store import ResultStore
from workers.submit import Submitter

#: The served path before issue 15: fp32 weights, diffusers' default (SDPA) attention, NCHW, eager,
#: torch's default thread count (every core).
BEFORE = f"float32+sdpa@{os.cpu_count() or 1}"


@dataclass(frozen=True)
class ServiceSetting:
    """``ACCELERATION[@THREADS]``: a ``MAMMOGEN_ACCELERATION`` value and optionally the torch threads."""

    acceleration: str
    threads: int | None = None

    @classmethod
    def parse(cls, text: str) -> ServiceSetting:
        accel, _, threads = text.strip().partition("@")
        return cls(accel, int(threads) if threads else None)

    @property
    def name(self) -> str:
        return self.acceleration + (f"@{self.threads}" if self.threads else "")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Worker:
    def __init__(self, setting: ServiceSetting, command: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.setting = setting
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.queue_name = f"mammogen-bench-{self.name}"
        env = {**env, "MAMMOGEN_ACCELERATION": setting.acceleration, "MAMMOGEN_QUEUE_NAME": self.queue_name}
        if setting.threads:
            env["MAMMOGEN_TORCH_THREADS"] = str(setting.threads)
        self._log = log.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [*command, "--name", self.name], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.ready_s: float | None = None
        self.log_path = log

    def poll_ready(self, conn: Redis) -> bool:
        if self.ready_s is None and conn.exists(worker_alive_key(self.name)):
            self.ready_s = time.perf_counter() - self.started
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.setting.name} exited: {self.log_path.read_text()[-2000:]}")
        return self.ready_s is not None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def bench_service(
    conn: Redis,
    env: dict[str, str],
    worker_command: Sequence[str],
    job: GenerateJob,
    settings: Sequence[ServiceSetting],
    *,
    repeats: int = 1,
    timeout_s: float = 3600.0,
    work_dir: Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one row per setting (the first is the baseline of every ratio). ``env`` is the workers'
    environment (Redis URL, bundles, device); the result store is a fresh folder under ``work_dir``."""
    work = Path(work_dir or tempfile.mkdtemp(prefix="mammogen-bench-service-"))
    work.mkdir(parents=True, exist_ok=True)
    store = ResultStore(work / "results")
    env = {**env, "MAMMOGEN_RESULT_DIR": str(store.root)}
    workers = [_Worker(s, worker_command, env, work / f"worker{i}.log") for i, s in enumerate(settings)]
    try:
        deadline = time.monotonic() + timeout_s
        while not all(w.poll_ready(conn) for w in workers):
            if time.monotonic() > deadline:
                raise TimeoutError("workers not ready in time")
            time.sleep(0.1)
        runs: dict[str, list[dict[str, Any]]] = {w.setting.name: [] for w in workers}
        for _ in range(repeats):
            for w in workers:
                runs[w.setting.name].append(_timed_job(conn, w, job, store, deadline))
        yield from _rows(workers, runs, job, store)
    finally:
        for w in workers:
            w.stop()
        _forget_queues(conn, [w.queue_name for w in workers])


def _forget_queues(conn: Redis, names: list[str]) -> None:
    """The bench's queues leave nothing behind: their registries, jobs and names go."""
    for name in names:
        queue = make_queue(conn, name)
        registries = ("finished", "failed", "started", "deferred", "scheduled", "canceled")
        conn.delete(*(getattr(queue, f"{r}_job_registry").key for r in registries))
        queue.delete(delete_jobs=True)


def _timed_job(conn: Redis, worker: _Worker, job: GenerateJob, store: ResultStore, deadline: float) -> dict[str, Any]:
    queue = make_queue(conn, worker.queue_name)
    sub = Submitter(queue, max_queue_length=10, result_ttl_s=3600, retries=0)
    cpu0, t0 = _cpu_seconds(worker.proc.pid), time.perf_counter()
    rq_job = queue.fetch_job(sub.submit(job, timeout_s=int(max(60, deadline - time.monotonic()))).job_id)
    while not (rq_job.is_finished or rq_job.is_failed):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job on {worker.setting.name} not finished in time")
        time.sleep(0.05)
        rq_job.refresh()
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds(worker.proc.pid) - cpu0
    if rq_job.is_failed:
        raise RuntimeError(f"job failed on {worker.setting.name}: {rq_job.get_meta().get('error')}")
    result = rq_job.return_value()
    images = [np.load(store.path_of(rq_job.id, f["name"])) for f in result["files"] if f["name"].endswith(".npy")]
    rq_job.delete()  # the bench leaves nothing in Redis; the files stay in the work folder
    return {"seconds": seconds, "cpu_seconds": cpu, "summary": result["summary"], "images": images}


def _rows(
    workers: list[_Worker], runs: dict[str, list[dict[str, Any]]], job: GenerateJob, store: ResultStore
) -> Iterator[dict[str, Any]]:
    base = runs[workers[0].setting.name]
    base_s = statistics.median(r["seconds"] for r in base)
    base_cpu = statistics.median(r["cpu_seconds"] for r in base)
    request = job.request
    for w in workers:
        rs = runs[w.setting.name]
        seconds = statistics.median(r["seconds"] for r in rs)
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        accel = rs[-1]["summary"]["acceleration"]
        row: dict[str, Any] = {
            "bench": "service",
            "setting": w.setting.name,
            "label": accel["label"],
            "threads": accel["threads"],
            "device": accel["device"],
            "model": request.model,
            "height": request.height,
            "width": request.width,
            "count": len(request.options.seeds),
            "sampler": request.options.sampler,
            "steps": request.options.steps,
            "stitching": request.options.stitching,
            "repeats": len(rs),
            "ready_s": round(w.ready_s or 0.0, 3),
            "warmed": accel["warmed"],
            "seconds": round(seconds, 3),
            "seconds_all": [round(r["seconds"], 3) for r in rs],
            "job_s": rs[-1]["summary"]["timings"]["job_s"],
            "worker_cpu_seconds": round(cpu, 3),
            "speedup_vs_first": round(base_s / seconds, 3),
            "cpu_speedup_vs_first": round(base_cpu / cpu, 3) if cpu > 0 else None,
            "baseline": workers[0].setting.name,
            **_difference(rs[0]["images"], base[0]["images"]),
        }
        yield row


def _difference(images: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, Any]:
    """Pixel difference on the [0, 1] scale, over all images of the job."""
    if not images or len(images) != len(reference):
        return {"max_abs_diff": None}
    a = np.concatenate([i.ravel() for i in images]).astype(np.float64)
    b = np.concatenate([i.ravel() for i in reference]).astype(np.float64)
    diff = np.abs(a - b)
    mse = float(np.mean(diff**2))
    return {
        "max_abs_diff": round(float(diff.max()), 6),
        "mean_abs_diff": round(float(diff.mean()), 6),
        "pixels_off_1_256": round(float(np.mean(diff > 1 / 256)), 6),
        "psnr_db": round(10 * np.log10(1.0 / mse), 2) if mse > 0 else None,
    }
