"""Progress reaches the job meta (throttled, last step always written); the cancel flag stops a pipeline."""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.job import Job

from models.errors import CancelledError
from models.progress import Progress, Reporter
from tests.service_support import purge_queue, unique_queue
from workers.progress import JobProgress, cancel_requested, request_cancel
from workers.queueing import SERIALIZER

pytestmark = pytest.mark.integration


@pytest.fixture
def job(redis_conn) -> Job:
    name = unique_queue("progress")
    q = Queue(name, connection=redis_conn, serializer=SERIALIZER)
    yield q.enqueue("workers.jobs.generate", job={})
    purge_queue(redis_conn, name)


def _meta(job: Job) -> dict:
    return Job.fetch(job.id, connection=job.connection, serializer=SERIALIZER).get_meta()


def test_progress_is_written_throttled_and_the_last_step_always(job):
    sink = JobProgress(job, job.connection, min_interval_s=60)
    sink(Progress("global", 1, 10, 0.05, 1.0, 19.0))
    assert _meta(job)["progress"]["step"] == 1
    sink(Progress("global", 2, 10, 0.10, 2.0, 18.0))  # within the interval: not written
    assert _meta(job)["progress"]["step"] == 1
    sink(Progress("global", 10, 10, 0.5, 10.0, 10.0))  # a stage's last step is always written
    p = _meta(job)["progress"]
    assert (p["stage"], p["step"], p["total"], p["fraction"], p["eta_s"]) == ("global", 10, 10, 0.5, 10.0)


def test_cancel_flag_raises_at_the_next_reported_step(job):
    sink = JobProgress(job, job.connection)
    reporter = Reporter(sink, sink.cancelled, {"patch": 1.0})
    reporter.step("patch", 1, 100)
    assert not cancel_requested(job.connection, job.id)
    request_cancel(job.connection, job.id, ttl_s=60)
    time.sleep(0.06)  # the flag is polled at most every 50 ms
    with pytest.raises(CancelledError):
        reporter.step("patch", 2, 100)
