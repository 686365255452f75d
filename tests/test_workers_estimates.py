"""Queued ETAs and Retry-After come from how long this queue's jobs really took."""

from __future__ import annotations

import pytest
from rq import Queue

from app.api.schemas import GenerateRequest
from tests.service_support import dualview_bundle, purge_queue, redis_conn, unique_queue  # noqa: F401
from workers.estimates import mean_run_seconds, queued_eta_seconds, retry_after_seconds
from workers.queueing import SERIALIZER
from workers.runtime import WorkerRuntime
from workers.store import ResultStore
from workers.submit import Submitter
from workers.worker import MammogenWorker

pytestmark = pytest.mark.integration


def test_estimates_follow_the_measured_run_times(redis_conn, dualview_bundle, tmp_path):  # noqa: F811
    name = unique_queue("estimates")
    queue = Queue(name, connection=redis_conn, serializer=SERIALIZER)
    try:
        assert mean_run_seconds(queue) is None and retry_after_seconds(queue, default=7) == 7
        sub = Submitter(queue, max_queue_length=5, result_ttl_s=600, retries=0)
        for seed in (1, 2):
            params = GenerateRequest(model="dualview", steps=2, seed=seed, formats=["npy"]).model_dump()
            sub.submit("generate", params, timeout_s=300)
        runtime = WorkerRuntime(ResultStore(tmp_path), {"dualview": dualview_bundle})
        MammogenWorker([queue], connection=redis_conn, runtime=runtime, heartbeat_s=1).work(burst=True)
        mean = mean_run_seconds(queue)
        assert mean is not None and mean > 0
        assert queued_eta_seconds(queue, 0) == pytest.approx(2 * mean, abs=0.1)
        assert queued_eta_seconds(queue, 3) == pytest.approx(5 * mean, abs=0.1)  # no live worker: one at a time
        assert retry_after_seconds(queue) == max(1, round(mean))
    finally:
        purge_queue(redis_conn, name)
