"""Failures are recorded with the typed error's code and HTTP status, and only retryable ones retry."""

from __future__ import annotations

import pytest
import torch
from rq import Queue
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException

from models.errors import BadInputError, BundleNotFoundError
from tests.service_support import dualview_job, purge_queue, redis_conn, unique_queue  # noqa: F401
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
def test_a_job_whose_bundle_is_missing_fails_once_with_bundle_missing_and_is_not_retried(redis_conn, tmp_path):  # noqa: F811
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
