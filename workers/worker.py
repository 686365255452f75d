"""The RQ worker: a `SimpleWorker` that keeps the loaded bundles for its whole life.

The default forking `Worker` reloads the checkpoints in every work horse and breaks CUDA after
fork, so the job runs in this process. What `SimpleWorker` lacks, this class adds:

- a heartbeat thread (`workers.heartbeat`) so a killed worker drops out of /readyz and its job
  is reaped within ``2 x heartbeat_s + 1`` s (plus a watchdog tick) instead of its whole timeout;
- a retry starts from a clean slate: the previous attempt's progress and error are cleared;
- a Redis outage is ridden out: the job computes on, the loop and the job's end wait for Redis with
  backoff, the process (and its loaded bundles) stays, and the outage never costs the job a retry;
- failures recorded as ``{error, detail, http_status}`` in the job meta, from the typed errors;
- the retry policy: only failures that another attempt can fix are retried (not bad input,
  a missing bundle or a user's cancel); a cancelled job ends with the error ``cancelled``.

Only RQ's public API is used (exception handling, job and registry methods, no private attribute);
the method signatures overridden here are RQ 3's, hence the pin ``rq>=3.0,<4`` in pyproject.toml.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import uuid
from typing import Any

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.worker import SimpleWorker, WorkerStatus

from models.errors import (
    BadInputError,
    BundleIntegrityError,
    BundleNotFoundError,
    CancelledError,
    MammogenError,
    OutOfMemoryError,
)
from workers import runtime as runtime_mod
from workers.delivery import DeliveryLoop
from workers.heartbeat import Heartbeat
from workers.queueing import REDIS_OUTAGE, SERIALIZER, wait_for_redis
from workers.runtime import WorkerRuntime
from workers.watchdog import clear_attempt, heartbeat_ttl_s

#: Errors a retry cannot fix (a timed-out job would only time out again).
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    BadInputError,
    BundleNotFoundError,
    BundleIntegrityError,
    CancelledError,
    JobTimeoutException,
)


def is_device_oom(exc: BaseException | None) -> bool:
    """torch's CUDA/MPS out-of-memory errors (a RuntimeError subclass, or a plain one saying so)."""
    if exc is None or "torch" not in sys.modules:
        return False
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_device_memory() -> None:
    """After an OOM: drop cached blocks so the next job starts from the loaded weights only."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def error_record(exc: BaseException | None) -> dict[str, Any]:
    """The job meta ``error`` entry for an exception: the same code/status the API would answer."""
    if is_device_oom(exc):
        exc = OutOfMemoryError(f"the device ran out of memory ({exc}); retry with a smaller max_batch or size")
    if isinstance(exc, MammogenError):
        return {**exc.to_dict(), "http_status": exc.http_status}
    if isinstance(exc, JobTimeoutException):
        return {"error": "timeout", "detail": str(exc), "http_status": 504}
    return {"error": "internal_error", "detail": f"{type(exc).__name__}: {exc}", "http_status": 500}


class MammogenWorker(SimpleWorker):
    #: RQ's dequeue backoff after a Redis error doubles up to this (RQ's default, 60 s, idles too long).
    max_connection_wait_time = 5.0

    def __init__(
        self,
        queues: list[Queue] | list[str],
        *,
        runtime: WorkerRuntime,
        heartbeat_s: float = 10.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("serializer", SERIALIZER)
        # host-pid plus a random part: a restarted container has the same host name and PID 1, and RQ
        # refuses a name whose previous (dead) owner's key has not expired yet.
        kwargs.setdefault("name", f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        # RQ's own abandoned-job scan also runs here, far more often than its 600 s default.
        kwargs.setdefault("maintenance_interval", max(5, int(heartbeat_s * 3)))
        super().__init__(queues, **kwargs)
        self.runtime = runtime
        self.heartbeat_s = heartbeat_s
        self.heartbeat_ttl = heartbeat_ttl_s(heartbeat_s)  # what /readyz and the watchdog wait for
        self._beat = Heartbeat(self, heartbeat_s, self.heartbeat_ttl, self._describe)
        self._redis_lost_at = -math.inf

    def _describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queue_names(),
            **self.runtime.describe(),
        }

    # lifecycle ------------------------------------------------------------------------------
    def work(self, *args: Any, **kwargs: Any) -> bool:
        runtime_mod.install(self.runtime)
        self.runtime.load_all()
        self._beat.beat()
        self._beat.start()
        delivery = self._start_delivery()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._beat.stop()
            if delivery is not None:
                delivery.stop()

    def _start_delivery(self) -> DeliveryLoop | None:
        """PACS delivery runs beside the job loop (see `workers.delivery`) when any PACS is configured."""
        if not self.runtime.pacs:
            return None
        loop = DeliveryLoop(
            self.connection, self.queue_names(), self.runtime.store, self.runtime.pacs, self.runtime.delivery
        )
        loop.start()
        return loop

    # Redis outages ----------------------------------------------------------------------------
    def wait_for_redis(self, why: str = "") -> None:
        if wait_for_redis(self.connection, self.log, why) > 0.0:
            self._redis_lost_at = time.monotonic()

    def _outage(self, exc: BaseException) -> None:
        if time.monotonic() - self._redis_lost_at > self.heartbeat_ttl:
            self.log.warning("Worker %s: Redis unreachable (%s); carrying on", self.name, type(exc).__name__)
        self._redis_lost_at = time.monotonic()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """A missed beat is not fatal (RQ's loop would quit on it); the heartbeat thread keeps the TTLs."""
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        try:
            super().heartbeat(timeout)
        except REDIS_OUTAGE as exc:
            self._outage(exc)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            return super().set_state(state, pipeline)
        try:
            super().set_state(state)
        except REDIS_OUTAGE as exc:  # RQ has set the state in memory before writing it
            self._outage(exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except REDIS_OUTAGE as exc:
            self._outage(exc)

    def run_maintenance_tasks(self) -> None:
        """Skipped for a heartbeat TTL after an outage: every execution looks expired until its worker has
        beaten again, and RQ's abandoned-job scan would burn their retries."""
        if time.monotonic() - self._redis_lost_at < self.heartbeat_ttl:
            return
        try:
            super().run_maintenance_tasks()
        except REDIS_OUTAGE as exc:
            self._outage(exc)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """The job's result waits for Redis, however long the outage: it is finished work."""
        self.wait_for_redis(f"; job {job.id} is recorded once it answers")
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Execution) -> None:
        self.wait_for_redis(f"; job {job.id} is recorded once it answers")
        super().handle_job_success(job, queue, started_job_registry, execution)

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: Any = None, **kwargs: Any) -> None:
        self.wait_for_redis(f"; job {job.id} is recorded once it answers")
        super().handle_job_failure(job, queue, started_job_registry, **kwargs)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short: the heartbeat thread extends it while the job runs, a dead worker lets it lapse."""
        return self.heartbeat_ttl

    def execute_job(self, job: Job, queue: Queue) -> None:
        self.wait_for_redis()
        clear_attempt(job)
        execution = self.prepare_execution(job)
        self._beat.track(job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._beat.untrack()
        self.set_state(WorkerStatus.IDLE)

    # failures -------------------------------------------------------------------------------
    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """RQ's public failure hook: it runs before RQ decides on a retry (``handle_job_failure`` reads
        ``job.retries_left`` next), so the policy and the record are settled here.

        A retry cannot fix bad input, a missing bundle, a timeout or a user's cancel: none is taken.
        A Redis outage is the infrastructure's, not the job's: the retry it triggers is given back.
        The reason goes into the job meta as ``{error, detail, http_status}``. A user's cancel is a
        normal outcome: one INFO line, not RQ's ERROR with a traceback; RQ records the job failed
        with the error ``cancelled``, which the API reports as status "cancelled".
        """
        exc = exc_info[1]
        if isinstance(exc, NOT_RETRYABLE):
            job.retries_left = 0
        elif isinstance(exc, REDIS_OUTAGE) and job.retries_left is not None:
            job.retries_left += 1
            self.wait_for_redis()
        if is_device_oom(exc):
            free_device_memory()  # the worker keeps serving; a retry may land on a freer device
        try:
            meta = job.get_meta(refresh=True)
            meta["error"] = error_record(exc)
            job.meta = meta
            job.save_meta()
        except Exception:  # recording the reason must not hide the failure itself
            self.log.exception("could not record the error of job %s", job.id)
        if isinstance(exc, CancelledError):
            self.log.info("Worker %s: job %s cancelled by the user; stopped between two steps", self.name, job.id)
            return
        super().handle_exception(job, *exc_info)


def run_worker(worker: MammogenWorker, burst: bool = False) -> int:
    """Run until stopped (or, with ``burst``, until the queues are empty); exit code 0 on success."""
    ok = worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
    sys.stdout.flush()
    return 0 if ok or burst else 1
