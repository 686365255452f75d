"""Find jobs whose worker died, and the workers that are alive.

RQ's own abandoned-job scan runs in other workers' maintenance (every 600 s by default) and
never runs when the only worker is the one that died. The API process therefore runs a
`Watchdog` thread too: every few seconds it retries (if retries are left) or fails every job
whose execution heartbeat expired, records why in the job meta, and prunes old results.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from workers.queueing import REDIS_OUTAGE, SERIALIZER, WORKER_ALIVE_PATTERN
from workers.store import ResultStore

log = logging.getLogger(__name__)

WORKER_LOST = {
    "error": "worker_lost",
    "detail": "the worker running this job stopped sending heartbeats (killed, out of memory or host lost)",
    "http_status": 500,
}


def reap_abandoned(queue: Queue) -> list[str]:
    """Retry or fail the jobs of ``queue`` whose heartbeat expired; returns their ids.

    Several API processes and RQ's own worker maintenance may scan at once; RQ's maintenance lock
    (held here for seconds, not RQ's 15 minutes) lets only one of them act, so no job is retried twice.
    """
    if not queue.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=30):
        return []
    try:
        registry = StartedJobRegistry(queue.name, connection=queue.connection, serializer=SERIALIZER)
        expired = registry.get_expired_job_ids()
        if expired:
            registry.cleanup()
    finally:
        queue.connection.delete(queue.registry_cleaning_key)
    for job_id in expired:
        try:
            job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
        except NoSuchJobError:
            continue
        meta = job.get_meta()
        meta["worker_lost"] = meta.get("worker_lost", 0) + 1
        if job.get_status() == JobStatus.FAILED:
            meta["error"] = WORKER_LOST
        else:  # retried: the dead attempt's step and ETA say nothing about the next one
            meta.pop("progress", None)
        job.meta = meta
        job.save_meta()
        log.warning("job %s lost its worker: now %s", job_id, job.get_status())
    return expired


def heartbeat_ttl_s(heartbeat_s: float) -> int:
    """How long a worker's keys outlive its last beat: two beats (one may be late) and a second of slack."""
    return math.ceil(2 * heartbeat_s) + 1


def clear_attempt(job: Job) -> None:
    """Forget what an earlier attempt reported (progress, error) before a new one starts."""
    meta = job.get_meta(refresh=True)
    if "progress" in meta or "error" in meta:
        meta.pop("progress", None)
        meta.pop("error", None)
        job.meta = meta
        job.save_meta()


def live_workers(connection: Redis, queue_name: str | None = None) -> list[dict[str, Any]]:
    """Workers whose alive key has not expired (optionally only those serving ``queue_name``)."""
    found = []
    for key in connection.scan_iter(match=WORKER_ALIVE_PATTERN, count=200):
        raw = connection.get(key)
        if raw is None:
            continue
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        if queue_name is None or queue_name in info.get("queues", []):
            found.append(info)
    return sorted(found, key=lambda w: w.get("name", ""))


class Watchdog(threading.Thread):
    """Periodic reaping of abandoned jobs and clean-up of expired result files.

    After Redis was unreachable (or when this process starts) it waits ``grace_s`` (a heartbeat TTL)
    before reaping: until the workers have beaten again every running job looks abandoned, and
    reaping it would cost it a retry for an outage that was not its fault.
    """

    def __init__(
        self,
        queues: list[Queue],
        store: ResultStore | None,
        interval_s: float,
        retention_s: float,
        grace_s: float = 0.0,
    ) -> None:
        super().__init__(name="mammogen-watchdog", daemon=True)
        self.queues = queues
        self.store = store
        self.interval_s = interval_s
        self.retention_s = retention_s
        self.grace_s = grace_s
        self._stop_event = threading.Event()
        self._last_cleanup = 0.0
        self._redis_seen_at = time.monotonic()  # since when Redis has answered without a break
        self._failing = False

    def tick(self) -> None:
        for q in self.queues:
            q.connection.ping()  # an outage raises here, before anything is judged abandoned
        if self._failing:
            log.warning("watchdog: Redis answers again; reaping resumes in %.0f s", self.grace_s)
            self._failing = False
            self._redis_seen_at = time.monotonic()
        if time.monotonic() - self._redis_seen_at >= self.grace_s:
            for q in self.queues:
                reap_abandoned(q)
        if self.store is not None and time.monotonic() - self._last_cleanup > min(3600.0, self.retention_s / 4):
            self._last_cleanup = time.monotonic()
            removed = self.store.cleanup(self.retention_s)
            if removed:
                log.info("removed %d expired result folders", len(removed))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self.tick()
            except REDIS_OUTAGE as exc:
                if not self._failing:
                    log.warning("watchdog: Redis unreachable (%s)", type(exc).__name__)
                self._failing = True
            except Exception:
                log.exception("watchdog tick failed")

    def stop(self) -> None:
        self._stop_event.set()
