"""A started job whose worker stops beating is retried (retries left) or failed, never left started;
a job whose worker keeps beating is left alone. Real Redis, a real RQ worker object, no work loop."""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from tests.service_support import dualview_job, purge_queue, unique_queue
from workers.queueing import SERIALIZER
from workers.runtime import WorkerRuntime
from workers.store import ResultStore
from workers.submit import Submitter
from workers.watchdog import live_workers, reap_abandoned
from workers.worker import MammogenWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(redis_conn) -> Queue:
    name = unique_queue("watchdog")
    yield Queue(name, connection=redis_conn, serializer=SERIALIZER)
    purge_queue(redis_conn, name)


def _start_job(queue: Queue, tmp_path, retries: int) -> tuple[MammogenWorker, Job, object]:
    """Enqueue one job and mark it started by a worker that will never beat again (a dead one)."""
    sub = Submitter(queue, max_queue_length=10, result_ttl_s=600, retries=retries)
    sub.submit(dualview_job(), timeout_s=600)
    worker = MammogenWorker(
        [queue], connection=queue.connection, runtime=WorkerRuntime(ResultStore(tmp_path), {}), heartbeat_s=0.5
    )
    job, _ = Queue.dequeue_any([queue], None, connection=queue.connection, serializer=SERIALIZER)
    execution = worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    assert job.get_status() == JobStatus.STARTED
    return worker, job, execution


def test_job_of_a_silent_worker_is_retried_after_its_heartbeat_ttl(queue, tmp_path):
    worker, job, _ = _start_job(queue, tmp_path, retries=1)
    assert reap_abandoned(queue) == []  # still within the TTL
    time.sleep(worker.heartbeat_ttl + 0.5)
    assert reap_abandoned(queue) == [job.id]
    assert job.get_status() == JobStatus.QUEUED
    assert job.get_meta()["worker_lost"] == 1 and queue.get_job_ids() == [job.id]


def test_job_of_a_silent_worker_without_retries_fails_with_the_reason(queue, tmp_path):
    worker, job, _ = _start_job(queue, tmp_path, retries=0)
    time.sleep(worker.heartbeat_ttl + 0.5)
    assert reap_abandoned(queue) == [job.id]
    assert job.get_status() == JobStatus.FAILED
    assert job.get_meta()["error"]["error"] == "worker_lost"


def test_job_of_a_beating_worker_is_left_alone(queue, tmp_path):
    worker, job, execution = _start_job(queue, tmp_path, retries=0)
    for _ in range(int(worker.heartbeat_ttl / 0.5) + 3):
        time.sleep(0.5)
        worker.maintain_heartbeats(job, execution)
        assert reap_abandoned(queue) == []
    assert job.get_status() == JobStatus.STARTED


def test_alive_key_lists_a_worker_until_it_expires(queue, tmp_path):
    worker = MammogenWorker(
        [queue], connection=queue.connection, runtime=WorkerRuntime(ResultStore(tmp_path), {}), heartbeat_s=0.5
    )
    worker._beat.beat()
    assert [w["name"] for w in live_workers(queue.connection, queue.name)] == [worker.name]
    time.sleep(worker.heartbeat_ttl + 0.3)
    assert live_workers(queue.connection, queue.name) == []
