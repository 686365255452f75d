"""Progress into the job's meta and the cooperative cancel flag, as the callbacks a pipeline takes.

`SimpleWorker` cannot kill a running job (``send_stop_job_command`` is a no-op without a work
horse), so cancel is cooperative: DELETE /jobs/{id} sets a Redis flag and the pipeline's
`models.progress.Reporter` reads it after every denoising step, raising CancelledError.
Meta writes are throttled: a tiny model can take hundreds of steps a second.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis import Redis
from rq.job import Job

from models.progress import Progress
from workers.queueing import REDIS_OUTAGE, cancel_key

log = logging.getLogger(__name__)


def request_cancel(connection: Redis, job_id: str, ttl_s: int = 7 * 24 * 3600) -> None:
    connection.set(cancel_key(job_id), b"1", ex=ttl_s)


def cancel_requested(connection: Redis, job_id: str) -> bool:
    return bool(connection.exists(cancel_key(job_id)))


class JobProgress:
    """Callable progress sink (``callback``) plus ``cancelled()`` (``cancel``) for one running job."""

    def __init__(self, job: Job, connection: Redis, min_interval_s: float = 0.25) -> None:
        self.job = job
        self.connection = connection
        self.min_interval_s = min_interval_s
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False
        self._warned = False

    def set(self, **fields: Any) -> None:
        """Merge fields into the job meta and save now; during a Redis outage the job keeps computing
        and the next report after it carries the news."""
        self.job.meta.update(fields)
        try:
            self.job.save_meta()
        except REDIS_OUTAGE:
            self._outage()

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        last_step = p.step >= p.total
        if not last_step and now - self._last_write < self.min_interval_s:
            return
        self._last_write = now
        self.set(
            progress={
                "stage": p.stage,
                "step": p.step,
                "total": p.total,
                "fraction": round(float(p.fraction), 4),
                "elapsed_s": round(float(p.elapsed_s), 3),
                "eta_s": None if p.eta_s is None else round(float(p.eta_s), 1),
                "updated_at": time.time(),
            }
        )

    def cancelled(self) -> bool:
        """True once DELETE was requested; polls Redis at most every 50 ms."""
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= 0.05:
            self._last_cancel_check = now
            try:
                self._cancelled = cancel_requested(self.connection, self.job.id)
            except REDIS_OUTAGE:  # unknown while Redis is away: keep going, ask again later
                self._outage()
                self._last_cancel_check = now + 1.0
        return self._cancelled

    def _outage(self) -> None:
        if not self._warned:
            log.warning("job %s: Redis unreachable; computing on, progress resumes when it answers", self.job.id)
            self._warned = True
