"""An RQ job record -> the JobInfo the API returns (status, progress, queue position, results)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from app.api.schemas import DeliveryInfo, ErrorInfo, JobInfo, JobProgressInfo, ResultLink, WebhookInfo
from models.errors import JobNotFoundError
from workers.delivery import read_delivery
from workers.estimates import queued_eta_seconds, remaining_work, seconds_per_work
from workers.progress import cancel_requested
from workers.queueing import SERIALIZER, make_queue, queues_ahead
from workers.watchdog import WORKER_LOST
from workers.webhooks import read_webhook

TERMINAL = {"succeeded", "failed", "cancelled"}


def fetch_job(connection: Redis, job_id: str) -> Job:
    if not job_id or len(job_id) > 64 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in job_id):
        raise JobNotFoundError(f"no job {job_id!r}")
    try:
        job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
        job.get_status(refresh=True)
    except (NoSuchJobError, InvalidJobOperation) as exc:  # unknown, or a half-expired hash without status
        raise JobNotFoundError(f"no job {job_id!r} (unknown or expired)") from exc
    return job


def public_status(rq_status: str, meta: dict[str, Any]) -> str:
    if rq_status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        return "queued"
    if rq_status == JobStatus.STARTED:
        return "running"
    if rq_status == JobStatus.FINISHED:
        return "succeeded"
    if rq_status in (JobStatus.STOPPED, JobStatus.CANCELED):
        return "cancelled"
    if (meta.get("error") or {}).get("error") == "cancelled":
        return "cancelled"
    return "failed"


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def _error(job: Job, status: str, meta: dict[str, Any]) -> ErrorInfo | None:
    if status == "cancelled":
        return ErrorInfo(error="cancelled", detail="cancelled by the user", http_status=409)
    if status != "failed":
        return None
    if meta.get("error"):
        return ErrorInfo(**meta["error"])
    exc = job.exc_info or ""
    if "AbandonedJobError" in exc:  # reaped by RQ's own maintenance before our watchdog saw it
        return ErrorInfo(**WORKER_LOST)
    last = exc.strip().splitlines()[-1] if exc.strip() else "job failed"
    return ErrorInfo(error="internal_error", detail=last[:500], http_status=500)


def job_info(job: Job, connection: Redis, base_url: str) -> JobInfo:
    rq_status = str(job.get_status(refresh=False).value)
    meta = job.get_meta(refresh=True)
    status = public_status(rq_status, meta)
    results: list[ResultLink] = []
    summary: dict[str, Any] = {}
    if status == "succeeded":
        value = job.return_value(refresh=True)
        if isinstance(value, dict):
            summary = value.get("summary", {})
            for f in value.get("files", []):
                results.append(ResultLink(**f, url=f"{base_url}/jobs/{job.id}/results/{f['name']}"))
    progress = JobProgressInfo(
        **{k: v for k, v in meta.get("progress", {}).items() if k in JobProgressInfo.model_fields}
    )
    if status == "succeeded":
        progress.fraction = 1.0
        progress.eta_s = 0.0
    timings: dict[str, float] = {}
    if job.enqueued_at and job.started_at:
        timings["queued_s"] = round((job.started_at - job.enqueued_at).total_seconds(), 3)
    if job.started_at and job.ended_at:
        timings["run_s"] = round((job.ended_at - job.started_at).total_seconds(), 3)
    timings.update(summary.pop("timings", {}) if isinstance(summary.get("timings"), dict) else {})
    position = None
    priority = meta.get("priority", "normal")
    if status == "queued":
        try:
            position = job.get_position()
        except NoSuchJobError:
            position = None
        # nothing has run yet (or a retry starts over): the work ahead of it, then its own
        queue = make_queue(connection, job.origin)
        eta = queued_eta_seconds(queue, job, position) if position is not None else None
        if position is not None:  # every job queued at a higher priority starts first
            position += sum(
                connection.llen(make_queue(connection, name).key) for name in queues_ahead(job.origin, priority)
            )
        progress = JobProgressInfo(fraction=0.0, eta_s=eta)
    elif status == "running" and progress.eta_s is None and remaining_work(job) > 0:
        progress.eta_s = round(seconds_per_work(make_queue(connection, job.origin)) * remaining_work(job), 1)
    return JobInfo(
        id=job.id,
        kind=meta.get("kind", "unknown"),
        status=status,  # type: ignore[arg-type]
        rq_status=rq_status,
        priority=priority,
        queue_position=position,
        progress=progress,
        created_at=_iso(job.created_at),
        started_at=_iso(job.started_at),
        ended_at=_iso(job.ended_at),
        timings=timings,
        retries_left=job.retries_left,
        cancel_requested=cancel_requested(connection, job.id),
        error=_error(job, status, meta),
        results=results,
        summary=summary,
        delivery=_delivery(connection, job.id) if status == "succeeded" else None,
        webhook=_webhook(connection, job.id),
    )


def _webhook(connection: Redis, job_id: str) -> WebhookInfo | None:
    record = read_webhook(connection, job_id)
    return WebhookInfo(**record) if record else None


def _delivery(connection: Redis, job_id: str) -> DeliveryInfo | None:
    record = read_delivery(connection, job_id)
    return DeliveryInfo(**record) if record else None
