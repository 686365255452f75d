"""Waiting-time estimates from the recent past: how long jobs of this queue have been taking.

Used for a queued job's ETA and for the Retry-After of a 429, so clients back off in proportion
to the real load instead of a fixed guess.
"""

from __future__ import annotations

from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry

from workers.queueing import SERIALIZER
from workers.watchdog import live_workers


def mean_run_seconds(queue: Queue, sample: int = 20) -> float | None:
    """Mean run time of the last ``sample`` finished jobs (None when nothing finished yet)."""
    registry = FinishedJobRegistry(queue.name, connection=queue.connection, serializer=SERIALIZER)
    ids = registry.get_job_ids(0, sample - 1, desc=True, cleanup=False)
    runs = [
        (job.ended_at - job.started_at).total_seconds()
        for job in Job.fetch_many(ids, connection=queue.connection, serializer=SERIALIZER)
        if job is not None and job.started_at and job.ended_at
    ]
    return sum(runs) / len(runs) if runs else None


def queued_eta_seconds(queue: Queue, position: int) -> float | None:
    """Until a job at ``position`` (0 = next) is done: the jobs ahead, shared by the live workers, plus its own."""
    mean = mean_run_seconds(queue)
    if mean is None:
        return None
    workers = max(1, len(live_workers(queue.connection, queue.name)))
    return round(mean * (position // workers + 1 + 1), 1)  # + 1: the slot is busy with a running job now


def retry_after_seconds(queue: Queue, default: int = 10, cap: int = 600) -> int:
    """When a full queue is likely to have room again: about one job's run time per worker."""
    mean = mean_run_seconds(queue)
    if mean is None:
        return default
    workers = max(1, len(live_workers(queue.connection, queue.name)))
    return int(min(cap, max(1, round(mean / workers))))
