"""ETAs and Retry-After come from one cost estimate, calibrated on how long this queue's jobs really took."""

from __future__ import annotations

import pytest
from rq import Queue

from tests.service_support import dualview_job, purge_queue, unique_queue
from workers.estimates import (
    DEFAULT_SECONDS_PER_WORK,
    job_cost,
    queued_eta_seconds,
    retry_after_seconds,
    seconds_per_work,
)
from workers.queueing import SERIALIZER
from workers.runtime import WorkerRuntime
from workers.store import ResultStore
from workers.submit import Submitter
from workers.worker import MammogenWorker

pytestmark = pytest.mark.integration


def test_seconds_per_evaluation_are_measured_on_finished_jobs(redis_conn, dualview_bundle, tmp_path):
    name = unique_queue("estimates")
    queue = Queue(name, connection=redis_conn, serializer=SERIALIZER)
    try:
        assert seconds_per_work(queue) == DEFAULT_SECONDS_PER_WORK and retry_after_seconds(queue, default=7) == 7
        sub = Submitter(queue, max_queue_length=5, result_ttl_s=600, retries=0)
        works = []
        for seed, steps in ((1, 2), (2, 6)):
            job = dualview_job(steps=steps, seed=seed, formats=("npy",))
            cost = job_cost(job, None)
            works.append(cost.work)
            sub.submit(job, timeout_s=300, estimate=cost.to_dict())
        runtime = WorkerRuntime(ResultStore(tmp_path), {"dualview": dualview_bundle})
        MammogenWorker([queue], connection=redis_conn, runtime=runtime, heartbeat_s=1).work(burst=True)
        measured = seconds_per_work(queue)
        assert measured != DEFAULT_SECONDS_PER_WORK and measured > 0
        jobs = [queue.fetch_job(i) for i in queue.finished_job_registry.get_job_ids()]
        run = sum((j.ended_at - j.started_at).total_seconds() for j in jobs)
        assert measured == pytest.approx(run / sum(works), rel=1e-6)

        job = dualview_job(steps=4, seed=3)
        cost = job_cost(job, None)
        queued = queue.fetch_job(sub.submit(job, timeout_s=300, estimate=cost.to_dict()).job_id)
        assert queued_eta_seconds(queue, queued, 0) == pytest.approx(measured * cost.work, abs=0.1)
    finally:
        purge_queue(redis_conn, name)


def test_a_dual_view_pair_costs_its_recorded_size_not_the_papers_256():
    """Dual-view bundles record their pair size as geometry ``size`` (the demo's is 64): a 64 x 64 pair
    is 1/16 of a 256-tile, so the estimate (ETAs, admission) must not take it for one."""
    from workers.estimates import job_cost

    job = dualview_job(steps=10)
    assert job_cost(job, {"size": 64, "chest_wall": "left"}).work == pytest.approx(10 / 16)
    assert job_cost(job, {"size": [64, 128]}).work == pytest.approx(10 / 8)
    assert job_cost(job, {}).work == pytest.approx(10)  # nothing recorded: the paper's 256
