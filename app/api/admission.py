"""Checks every new job passes before it is queued: model available, size bounds, cost, timeout sizing."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from app.api.jobview import fetch_job, public_status
from app.api.public import bundle_label, without_server_paths
from app.api.schemas import JobAccepted
from app.api.state import ServiceState
from models.errors import BadInputError, BundleNotFoundError, CostLimitError, PayloadTooLargeError
from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig
from workers.estimates import (
    BASE_SECONDS,
    DEFAULT_SECONDS_PER_WORK,
    JobCost,
    job_cost,
    job_timeout_s,
    seconds_per_work,
)
from workers.job_requests import DICOM_FORMATS, GenerateJob, Job
from workers.submit import Submission
from workers.watchdog import live_workers
from workers.webhooks import check_callback_url


def ensure_model_available(state: ServiceState, bundle_kind: str) -> None:
    """503 naming the bundle when no live worker has it loaded (or, with no worker yet, it is not on disk)."""
    workers = live_workers(state.connection, state.queue.name)
    if workers:
        infos = [i for w in workers if (i := (w.get("bundles") or {}).get(bundle_kind))]
        if any(i.get("loaded") for i in infos):
            return
        reasons = sorted({_unloaded_reason(i) for i in infos}) or ["not configured"]
        raise BundleNotFoundError(f"no worker has the {bundle_kind} bundle loaded ({'; '.join(reasons)})")
    path = state.settings.bundle_path(bundle_kind)  # type: ignore[arg-type]
    if not (path / "manifest.json").is_file():
        raise BundleNotFoundError(f"the {bundle_kind} bundle is missing: no manifest.json in {bundle_label(path)}")


def _unloaded_reason(info: dict[str, Any]) -> str:
    return f"{bundle_label(info.get('path'))}: {without_server_paths(str(info.get('error')), info.get('path'))}"


def check_output_size(state: ServiceState, height: int | None, width: int | None, factor: int = 1) -> None:
    s = state.settings
    h, w = (height or 0) * factor, (width or 0) * factor
    if max(h, w) > s.max_image_side:
        raise PayloadTooLargeError(f"output {h}x{w} exceeds the longest side allowed ({s.max_image_side})")
    if h * w > s.max_image_pixels:
        raise PayloadTooLargeError(f"output {h}x{w} exceeds the pixel budget ({s.max_image_pixels})")


def bundle_summary(state: ServiceState, bundle_kind: str) -> dict[str, Any]:
    """What the workers report of the bundle they serve (or, before any worker, its manifest on disk):
    geometry, preprocessing config, name; empty when neither is there."""
    for w in live_workers(state.connection, state.queue.name):
        info = (w.get("bundles") or {}).get(bundle_kind) or {}
        if info.get("loaded") and isinstance(info.get("geometry"), dict):
            return info
    try:
        from models.bundle import load_bundle

        return load_bundle(state.settings.bundle_path(bundle_kind), verify=False).summary()  # type: ignore[arg-type]
    except Exception:
        return {}


def _geometry(state: ServiceState, bundle_kind: str) -> dict[str, Any] | None:
    return bundle_summary(state, bundle_kind).get("geometry")


def tile_size(summary: dict[str, Any]) -> int:
    return int((summary.get("geometry") or {}).get("s", 0))


def preprocess_config(summary: dict[str, Any]) -> PreprocessConfig:
    recorded = summary.get("preprocess")
    return PreprocessConfig.from_dict(recorded) if isinstance(recorded, dict) else DEFAULT_PREPROCESS


def check_generate_request(state: ServiceState, body: Any) -> None:
    """Refuse before queueing what the pipeline would refuse after: sizes below one tile of the served
    bundle, a class it does not have, lesions it cannot insert or that lie off the image."""
    if body.model == "dualview":
        return
    summary = bundle_summary(state, "mambo")
    geometry = summary.get("geometry") or {}
    s = int(geometry.get("s", 0))
    for name in ("height", "width"):
        value = getattr(body, name)
        if value is not None and value < s:
            raise BadInputError(f"{name} {value} is smaller than one {s}-pixel tile of the MAMBO bundle")
    if not summary:  # neither a worker nor a manifest to ask: the worker checks
        return
    request = body._request
    name = summary.get("name")
    if request.label is not None:
        stages = [net for key, net in _networks(summary).items() if key != "lesion"]
        classes = next((tuple(net["classes"]) for net in stages if net.get("classes")), ())
        if not classes:
            raise BadInputError(f"bundle {name} is not class-conditional: leave class unset")
        if request.label not in classes:
            raise BadInputError(f"unknown class {request.label!r}; bundle {name} has {', '.join(classes)}")
    if request.lesions:
        k = int(geometry.get("k", 3))
        native = geometry.get("native_size") or [k * s, k * s]
        check_lesions_on_bundle(summary, request.lesions, (body.height or native[0], body.width or native[1]))


def _networks(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    nets = summary.get("networks")
    return nets if isinstance(nets, dict) else {}


def lesion_kinds(summary: dict[str, Any]) -> tuple[str, ...] | None:
    """The kinds the served bundle's lesion network inserts (its manifest, as the workers report it);
    None when neither a worker nor a manifest can be asked (the worker checks); BundleNotFoundError (503)
    when the bundle has no lesion network."""
    if not summary:
        return None
    nets = _networks(summary)
    if "lesion" not in nets:
        raise BundleNotFoundError(
            f"the served MAMBO bundle {summary.get('name')} has no lesion network: lesion insertion is unavailable"
        )
    return tuple(nets["lesion"].get("classes") or ())


def check_lesions_on_bundle(summary: dict[str, Any], lesions: Any, shape: tuple[int, int]) -> None:
    """What the API can check of lesions without the image's pixels, with the worker's own check
    (`models.lesion_spec.check_lesions`): each kind is one the served bundle's lesion network inserts and
    each lesion lies on the image of ``shape``. In the breast and small enough for the bundle's window:
    the worker checks (it has the pixels and the networks)."""
    from models.lesion_spec import check_lesions

    kinds = lesion_kinds(summary)
    if kinds is not None:
        check_lesions(list(lesions), (int(shape[0]), int(shape[1])), kinds)


def admit_cost(state: ServiceState, job: Job, *, breast_fraction: float | None = None) -> JobCost:
    """The job's estimated cost (the one the ETAs use), refused when over the per-request limit or
    when its estimated run would outlast the job timeout."""
    bundle_kind = "dualview" if isinstance(job, GenerateJob) and job.request.model == "dualview" else "mambo"
    cost = job_cost(job, _geometry(state, bundle_kind), breast_fraction=breast_fraction)
    s = state.settings
    if cost.work > s.max_job_evaluations:
        raise CostLimitError(
            f"this job needs an estimated {cost.work:,.0f} model evaluations (256x256-tile equivalents), over "
            f"the per-request limit of {s.max_job_evaluations:,} (MAMMOGEN_MAX_JOB_EVALUATIONS): "
            "use fewer steps, images or pixels"
        )
    per_work = seconds_per_work(state.queue)
    seconds = BASE_SECONDS + cost.seconds(per_work)
    if seconds > s.job_timeout_s:
        source = "measured on this queue's recent jobs" if per_work != DEFAULT_SECONDS_PER_WORK else "default"
        raise CostLimitError(
            f"this job would run an estimated {seconds:,.0f} s ({cost.work:,.0f} evaluations at {per_work:.3g} s "
            f"each, {source}), longer than the job timeout of {s.job_timeout_s:,} s (MAMMOGEN_JOB_TIMEOUT_S): "
            "use fewer steps, images or pixels"
        )
    return cost


def timeout_for(state: ServiceState, cost: JobCost) -> int:
    return job_timeout_s(cost, state.settings.job_timeout_s)


def resolve_delivery(state: ServiceState, formats: list[str], deliver: list[str]) -> tuple[str, ...]:
    """The PACS a job's DICOM results go to: those the request names (each must be configured) plus
    every server set to ``send_all``; none when the job writes no DICOM."""
    servers = state.settings.pacs
    unknown = [name for name in deliver if name not in servers]
    if unknown:
        configured = ", ".join(sorted(servers)) or "none"
        raise BadInputError(f"deliver names unknown PACS {', '.join(map(repr, unknown))} (configured: {configured})")
    if not any(f in DICOM_FORMATS for f in formats):
        return ()
    return tuple(dict.fromkeys([*deliver, *(name for name, server in servers.items() if server.send_all)]))


def check_callback(state: ServiceState, url: str | None) -> str | None:
    """A callback the service may call (http(s), allowed host, no link-local or metadata address), or None."""
    if url is None:
        return None
    if state.settings.webhook_secret is None:
        raise BadInputError("this server signs no webhooks (MAMMOGEN_WEBHOOK_SECRET unset): callback_url refused")
    return check_callback_url(url, state.settings.webhook_allowed_hosts)


def accepted(request: Request, response: Response, sub: Submission) -> JobAccepted:
    """202 + Location for a new job; a replayed idempotent POST answers 200 with the same job as it is now."""
    location = f"{request.url_for('get_job', job_id=sub.job_id).path}"
    response.headers["Location"] = location
    response.status_code = 200 if sub.replayed else 202
    status = "queued"
    if sub.replayed:
        response.headers["Idempotent-Replayed"] = "true"
        state: ServiceState = request.app.state.service
        job = fetch_job(state.connection, sub.job_id)
        status = public_status(str(job.get_status(refresh=False).value), job.get_meta())
    return JobAccepted(id=sub.job_id, status=status, location=location, replayed=sub.replayed)  # type: ignore[arg-type]
