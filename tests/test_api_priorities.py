"""Priorities: one RQ queue per priority, each with its own exact bound; positions count the jobs
of higher priority; a real worker drains high before normal before low. Real app, real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.service_support import WorkerProcess, purge_queue, settings_for, unique_queue, wait_for
from workers.queueing import PRIORITIES, priority_queue_name

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path, redis_conn, dualview_bundle, mambo_bundle) -> Iterator[tuple[TestClient, object]]:
    queue = unique_queue("prio")
    settings = settings_for(
        tmp_path, queue, dualview_bundle=dualview_bundle, mambo_bundle=mambo_bundle, max_queue_length=2
    )
    try:
        with TestClient(create_app(settings)) as client:
            yield client, settings
    finally:
        for p in PRIORITIES:
            purge_queue(redis_conn, priority_queue_name(queue, p))


def _submit(client: TestClient, priority: str, seed: int = 0) -> object:
    return client.post("/generate", json={"model": "dualview", "steps": 1, "seed": seed, "priority": priority})


def test_each_priority_has_its_own_exact_bound(service):
    client, _ = service
    assert [_submit(client, "low", i).status_code for i in range(3)] == [202, 202, 429]
    r = _submit(client, "low", 9)
    assert r.status_code == 429 and "low-priority" in r.json()["detail"] and "Retry-After" in r.headers
    assert _submit(client, "high").status_code == 202  # bulk work never takes the room of interactive jobs
    assert _submit(client, "normal").status_code == 202
    assert _submit(client, "urgent").status_code == 422


def test_queue_position_counts_the_jobs_of_higher_priority(service):
    client, _ = service
    low_a, low_b = (_submit(client, "low", i).headers["Location"] for i in range(2))
    high = _submit(client, "high").headers["Location"]
    normal = _submit(client, "normal").headers["Location"]
    positions = {loc: client.get(loc).json() for loc in (high, normal, low_a, low_b)}
    assert [positions[loc]["queue_position"] for loc in (high, normal, low_a, low_b)] == [0, 1, 2, 3]
    assert [positions[loc]["priority"] for loc in (high, normal, low_a, low_b)] == ["high", "normal", "low", "low"]


@pytest.mark.slow
def test_high_priority_jobs_submitted_after_low_ones_start_first(service, redis_conn, tmp_path):
    client, settings = service
    order = [("low", 0), ("low", 1), ("normal", 2), ("high", 3)]  # submitted in this order, no worker yet
    locations = {p_s: _submit(client, *p_s).headers["Location"] for p_s in order}
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_alive(redis_conn)

        def ended() -> dict | None:
            infos = {k: client.get(loc).json() for k, loc in locations.items()}
            return infos if all(i["status"] == "succeeded" for i in infos.values()) else None

        infos = wait_for(ended, 180, what="all jobs to finish")
    finally:
        worker.stop()
    started = sorted(infos, key=lambda k: infos[k]["started_at"])
    assert started == [("high", 3), ("normal", 2), ("low", 0), ("low", 1)], started
