"""Hostile but fair load on a live loopback server: long-polls hold no thread, so probes and new
jobs keep answering; waiters are bounded per client.

Counts are small (60 waiters, one job) so the test stays fast; the 1 s bound is measured here, on a
loopback service, and is a bound, not a benchmark (the old thread-per-wait design took 18-28 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from app.main import create_app
from tests.service_support import live_server, purge_queue, settings_for, unique_queue, wait_for

pytestmark = pytest.mark.integration

WAITERS = 60
GEN = {"model": "dualview", "steps": 2, "seed": 1}


@pytest.fixture
def service(tmp_path, redis_conn, dualview_bundle) -> Iterator[tuple[object, str]]:
    queue = unique_queue("load")
    settings = settings_for(tmp_path, queue, dualview_bundle=dualview_bundle, max_waiters_per_client=WAITERS + 4)
    app = create_app(settings)
    try:
        with live_server(app) as base:
            yield app, base
    finally:
        purge_queue(redis_conn, queue)


def _long_polls(base: str, location: str, n: int, wait_s: float) -> tuple[list[threading.Thread], list[dict]]:
    answers: list[dict] = []

    def poll() -> None:
        with httpx.Client(base_url=base, timeout=wait_s + 30) as c:
            r = c.get(location, params={"wait": wait_s})
            answers.append({"status_code": r.status_code, **r.json()})

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, answers


def test_sixty_long_polls_leave_healthz_and_generate_answering_within_one_second(service):
    app, base = service
    with httpx.Client(base_url=base, timeout=30) as c:
        location = c.post("/generate", json=GEN).headers["Location"]  # no worker: it stays queued
        threads, answers = _long_polls(base, location, WAITERS, wait_s=30)
        wait_for(lambda: app.state.watcher.waiting == WAITERS, 30, what=f"{WAITERS} waiters")

        for probe in ("/healthz", "/readyz", "/metrics"):
            t0 = time.monotonic()
            r = c.get(probe)
            assert time.monotonic() - t0 < 1.0, f"{probe} took {time.monotonic() - t0:.1f} s"
            assert r.status_code in (200, 503)  # /readyz: no worker here
        t0 = time.monotonic()
        r = c.post("/generate", json=GEN)
        assert r.status_code == 202
        assert time.monotonic() - t0 < 1.0, f"POST /generate took {time.monotonic() - t0:.1f} s"
        assert "mammogen_waiters 60.0" in c.get("/metrics").text

        # The waits end on the change itself, not at their deadline: cancel wakes all of them.
        t0 = time.monotonic()
        assert c.delete(location).status_code == 202
        for t in threads:
            t.join(15)
        assert time.monotonic() - t0 < 10
    assert len(answers) == WAITERS
    assert {(a["status_code"], a["status"]) for a in answers} == {(200, "cancelled")}
    assert app.state.watcher.waiting == 0


def test_waiters_are_bounded_per_client(tmp_path, redis_conn, dualview_bundle):
    queue = unique_queue("waiters")
    settings = settings_for(tmp_path, queue, dualview_bundle=dualview_bundle, max_waiters_per_client=2)
    app = create_app(settings)
    try:
        with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as c:
            location = c.post("/generate", json=GEN).headers["Location"]
            threads, answers = _long_polls(base, location, 2, wait_s=20)
            wait_for(lambda: app.state.watcher.waiting == 2, 30, what="2 waiters")
            r = c.get(location, params={"wait": 5})
            assert r.status_code == 429
            assert r.json()["error"] == "too_many_waiters" and "2" in r.json()["detail"]
            assert "Retry-After" in r.headers
            assert c.get(location).status_code == 200  # a plain poll (no wait) is never refused
            c.delete(location)
            for t in threads:
                t.join(15)
            assert [a["status"] for a in answers] == ["cancelled", "cancelled"]
    finally:
        purge_queue(redis_conn, queue)
