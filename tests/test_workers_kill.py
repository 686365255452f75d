"""A worker killed with SIGKILL mid-job: its job is retried (retries left) and, when the retry's
worker is killed too, failed with the reason, each within the heartbeat bound, never left running."""

from __future__ import annotations

import signal
import time

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.service_support import (  # noqa: F401
    WorkerProcess,
    dualview_bundle,
    purge_queue,
    redis_or_skip,
    settings_for,
    unique_queue,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEARTBEAT_S = 1
#: Execution TTL (3 heartbeats) + one watchdog tick (heartbeat / 2, at least 1 s) + request slack.
BOUND_S = 3 * HEARTBEAT_S + 1 + 2


def _kill_when_running(client: TestClient, location: str, worker: WorkerProcess) -> float:
    wait_for(
        lambda: (j := client.get(location).json())["status"] == "running" and (j["progress"]["step"] or 0) > 0,
        120,
        what="the job to be running",
    )
    worker.kill(signal.SIGKILL)
    return time.monotonic()


def test_sigkilled_worker_job_is_retried_then_failed_within_the_heartbeat_bound(tmp_path, dualview_bundle):  # noqa: F811
    conn = redis_or_skip()
    queue = unique_queue("kill")
    settings = settings_for(tmp_path, queue, dualview_bundle=dualview_bundle, heartbeat_s=HEARTBEAT_S, job_retries=1)
    first = WorkerProcess(settings, tmp_path / "w1.log")
    second = None
    try:
        first.wait_alive(conn)
        with TestClient(create_app(settings)) as client:
            long = {"model": "dualview", "steps": 1000, "sampler": "ddpm", "seed": 0}
            location = client.post("/generate", json=long).headers["Location"]

            killed_at = _kill_when_running(client, location, first)
            info = wait_for(
                lambda: (j := client.get(location).json())["status"] != "running" and j, 30, what="the retry"
            )
            assert time.monotonic() - killed_at < BOUND_S
            assert info["status"] == "queued" and info["retries_left"] == 0
            # the alive key lapses on the same 3-heartbeat TTL: /readyz notices within the bound too
            wait_for(lambda: client.get("/readyz").status_code == 503, BOUND_S, what="/readyz to see no worker")

            second = WorkerProcess(settings, tmp_path / "w2.log")
            second.wait_alive(conn)
            killed_at = _kill_when_running(client, location, second)
            info = wait_for(
                lambda: (j := client.get(location).json())["status"] != "running" and j, 30, what="the failure"
            )
            assert time.monotonic() - killed_at < BOUND_S
            assert info["status"] == "failed"
            assert info["error"]["error"] == "worker_lost" and "heartbeats" in info["error"]["detail"]
    finally:
        first.stop()
        if second is not None:
            second.stop()
        purge_queue(conn, queue)
