"""Failures are recorded with the typed error's code and HTTP status, and only retryable ones retry."""

from __future__ import annotations

import pytest
import torch
from rq import Queue
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException

from models.errors import BadInputError, BundleNotFoundError
from tests.service_support import dualview_job, purge_queue, unique_queue
from workers.queueing import SERIALIZER
from workers.runtime import WorkerRuntime
from workers.store import ResultStore
from workers.submit import Submitter
from workers.worker import MammogenWorker, error_record, is_device_oom


@pytest.mark.parametrize(
    ("exc", "code", "status"),
    [
        (BadInputError("height too small"), "bad_input", 422),
        (BundleNotFoundError("no mambo bundle"), "bundle_missing", 503),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "out_of_memory", 507),
        (RuntimeError("MPS backend out of memory"), "out_of_memory", 507),
        (JobTimeoutException("Task exceeded maximum timeout value (60 seconds)"), "timeout", 504),
        (ValueError("boom"), "internal_error", 500),
    ],
)
def test_error_record_carries_the_typed_code_and_status(exc, code, status):
    rec = error_record(exc)
    assert (rec["error"], rec["http_status"]) == (code, status)
    assert rec["detail"]


def test_plain_runtime_errors_are_not_mistaken_for_oom():
    assert not is_device_oom(RuntimeError("shape mismatch"))


@pytest.mark.integration
def test_a_job_whose_bundle_is_missing_fails_once_with_bundle_missing_and_is_not_retried(redis_conn, tmp_path):
    name = unique_queue("errors")
    queue = Queue(name, connection=redis_conn, serializer=SERIALIZER)
    try:
        sub = Submitter(queue, max_queue_length=5, result_ttl_s=600, retries=3)
        job_id = sub.submit(dualview_job(), timeout_s=60).job_id
        runtime = WorkerRuntime(ResultStore(tmp_path), {"dualview": tmp_path / "nowhere"})
        worker = MammogenWorker([queue], connection=redis_conn, runtime=runtime, heartbeat_s=1)
        worker.work(burst=True)
        job = Job.fetch(job_id, connection=redis_conn, serializer=SERIALIZER)
        assert job.get_status() == JobStatus.FAILED
        assert job.get_meta()["error"]["error"] == "bundle_missing"
        assert str(tmp_path / "nowhere") in job.get_meta()["error"]["detail"]
        assert job.retries_left == 0 and queue.count == 0
    finally:
        purge_queue(redis_conn, name)


def _attempt() -> None:
    """Count this job's attempts in Redis (the test reads them back)."""
    from rq import get_current_job

    job = get_current_job()
    job.connection.incr(f"{job.origin}:attempts")


def device_oom() -> None:
    """A job that runs out of device memory (a retry may land on a freer device)."""
    _attempt()
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def bad_input() -> None:
    _attempt()
    raise BadInputError("height 20 is smaller than one tile")


def missing_bundle() -> None:
    _attempt()
    raise BundleNotFoundError("no mambo bundle is configured on this worker")


@pytest.mark.parametrize(
    ("func", "code", "attempts"),
    [(device_oom, "out_of_memory", 3), (bad_input, "bad_input", 1), (missing_bundle, "bundle_missing", 1)],
)
def test_the_retry_policy_is_set_before_rq_decides(redis_conn, tmp_path, func, code, attempts):
    """Retryable failures use their retries, the others none; each attempt's error is recorded."""
    from rq import Retry

    name = unique_queue("policy")
    queue = Queue(name, connection=redis_conn, serializer=SERIALIZER)
    try:
        job = queue.enqueue(f"{__name__}.{func.__name__}", retry=Retry(max=2))
        worker = MammogenWorker([queue], connection=redis_conn, runtime=WorkerRuntime(ResultStore(tmp_path), {}))
        worker.work(burst=True)
        job = Job.fetch(job.id, connection=redis_conn, serializer=SERIALIZER)
        assert job.get_status() == JobStatus.FAILED and job.get_meta()["error"]["error"] == code
        assert int(redis_conn.get(f"{name}:attempts")) == attempts and job.retries_left == 0
    finally:
        purge_queue(redis_conn, name)
