"""GET /jobs/{id}/events against the real service (real Redis, a real `mammogen worker` process, uvicorn):
a real job's stream carries increasing fractions and ends with the final record; a cancelled job's
stream ends with it; a reconnect with Last-Event-ID resumes instead of replaying."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from app.main import create_app
from tests.service_support import (
    WorkerProcess,
    live_server,
    purge_queue,
    redis_or_skip,
    settings_for,
    unique_queue,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, mambo_bundle, dualview_bundle) -> Iterator[str]:
    conn = redis_or_skip()
    tmp = tmp_path_factory.mktemp("events")
    queue = unique_queue("events")
    settings = settings_for(tmp, queue, mambo_bundle=mambo_bundle, dualview_bundle=dualview_bundle)
    worker = WorkerProcess(settings, tmp / "worker.log")
    try:
        worker.wait_alive(conn)
        with live_server(create_app(settings)) as url:
            yield url
    finally:
        worker.stop()
        purge_queue(conn, queue)


def read_events(response: httpx.Response) -> Iterator[tuple[str, str, dict]]:
    """(id, event, data) of each Server-Sent Event; comments (keep-alives) skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                yield fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value


def _submit(client: httpx.Client, steps: int) -> str:
    r = client.post("/generate", json={"model": "mambo", "height": 96, "width": 96, "steps": steps, "seed": 3})
    assert r.status_code == 202, r.text
    return r.headers["Location"]


def test_a_real_jobs_stream_carries_increasing_fractions_and_ends_with_the_final_record(base_url):
    with httpx.Client(base_url=base_url, timeout=300) as client:
        location = _submit(client, steps=60)
        with client.stream("GET", f"{location}/events") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = list(read_events(r))
        kinds = [e for _, e, _ in events]
        assert kinds[-1] == "final" and set(kinds[:-1]) <= {"progress"}
        fractions = [d["progress"]["fraction"] for _, _, d in events]
        assert fractions == sorted(fractions), fractions
        running = [f for f in fractions if 0 < f < 1]
        assert len(set(running)) >= 2, fractions  # progress was seen while it ran, not only at the ends
        final = events[-1][2]
        assert final["status"] == "succeeded" and final["results"] and final == client.get(location).json()
        assert len({i for i, _, _ in events}) == len(events)  # each event its own id

        # reconnecting after the end: the final record again, at once
        with client.stream("GET", f"{location}/events", headers={"Last-Event-ID": events[-1][0]}) as r:
            again = list(read_events(r))
        assert [e for _, e, _ in again] == ["final"]


def test_reconnect_with_last_event_id_does_not_replay_the_state_already_seen(base_url):
    with httpx.Client(base_url=base_url, timeout=300) as client:
        location = _submit(client, steps=60)
        with client.stream("GET", f"{location}/events") as r:
            first_id, _, _ = next(read_events(r))
        with client.stream("GET", f"{location}/events", headers={"Last-Event-ID": first_id}) as r:
            resumed = list(read_events(r))
        assert resumed and all(i != first_id for i, _, _ in resumed)
        assert resumed[-1][1] == "final" and resumed[-1][2]["status"] == "succeeded"


def test_the_stream_of_a_cancelled_job_ends_with_the_cancelled_record(base_url):
    with httpx.Client(base_url=base_url, timeout=300) as client:
        location = _submit(client, steps=1000)
        wait_for(lambda: client.get(location).json()["status"] == "running", 120, what="job start")
        with client.stream("GET", f"{location}/events") as r:
            events = read_events(r)
            assert next(events)[1] == "progress"
            assert client.delete(location).status_code == 202
            rest = list(events)
        assert rest[-1][1] == "final" and rest[-1][2]["status"] == "cancelled"


def test_unknown_job_is_404_before_any_stream(base_url):
    r = httpx.get(f"{base_url}/jobs/nope/events")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
