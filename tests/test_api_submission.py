"""Admission under load and retries: the queue bound is exact, nothing is lost, a retried POST runs once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job

from app.main import create_app
from tests.service_support import live_server, purge_queue, settings_for, unique_queue
from workers.job_requests import GenerateJob
from workers.queueing import SERIALIZER

pytestmark = pytest.mark.integration

BOUND = 40


@pytest.fixture
def service(tmp_path, redis_conn, dualview_bundle):
    queue = unique_queue("submit")
    settings = settings_for(tmp_path, queue, max_queue_length=BOUND, dualview_bundle=dualview_bundle)
    try:
        yield create_app(settings), Queue(queue, connection=redis_conn, serializer=SERIALIZER)
    finally:
        purge_queue(redis_conn, queue)


@pytest.fixture
def client(service) -> Iterator[tuple[TestClient, Queue]]:
    app, queue = service
    with TestClient(app) as c:
        yield c, queue


GEN = {"model": "dualview", "steps": 3, "seed": 1}


def test_new_job_is_202_with_location_and_is_queued(client):
    c, queue = client
    r = c.post("/generate", json=GEN)
    assert r.status_code == 202
    job_id = r.json()["id"]
    assert r.headers["Location"] == f"/jobs/{job_id}" == r.json()["location"]
    info = c.get(r.headers["Location"]).json()
    assert (info["status"], info["queue_position"], info["kind"]) == ("queued", 0, "generate")
    job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
    queued = GenerateJob.from_dict(job.kwargs["job"])  # a typed request, seed drawn from the client's
    assert queued.request.options.steps == 3 and queued.request.options.seeds == (1,)
    assert job.timeout >= 120 and job.retries_left == 1


def test_second_job_reports_queue_position_one(client):
    c, _ = client
    first = c.post("/generate", json=GEN).json()["id"]
    second = c.post("/generate", json=GEN).json()["id"]
    assert c.get(f"/jobs/{first}").json()["queue_position"] == 0
    assert c.get(f"/jobs/{second}").json()["queue_position"] == 1


def test_retried_post_with_the_same_idempotency_key_creates_one_job(client):
    c, queue = client
    h = {"Idempotency-Key": "order-42"}
    r1 = c.post("/generate", json=GEN, headers=h)
    r2 = c.post("/generate", json=GEN, headers=h)
    assert (r1.status_code, r2.status_code) == (202, 200)
    assert r1.json()["id"] == r2.json()["id"]
    assert r2.json()["replayed"] is True and r2.headers["Idempotent-Replayed"] == "true"
    assert queue.count == 1


def test_idempotency_key_reused_with_other_parameters_is_refused(client):
    c, queue = client
    h = {"Idempotency-Key": "order-43"}
    assert c.post("/generate", json=GEN, headers=h).status_code == 202
    r = c.post("/generate", json={**GEN, "seed": 2}, headers=h)
    assert r.status_code == 422
    assert "different parameters" in r.json()["detail"]
    assert queue.count == 1


def test_concurrent_retries_with_one_idempotency_key_make_one_job(service):
    app, queue = service
    with live_server(app) as base:
        ids: list[str] = []

        def post() -> None:
            with httpx.Client(base_url=base, timeout=30) as h:
                ids.append(h.post("/generate", json=GEN, headers={"Idempotency-Key": "same"}).json()["id"])

        threads = [threading.Thread(target=post) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(ids) == 10 and len(set(ids)) == 1
    assert queue.count == 1


@pytest.mark.slow
def test_100_concurrent_submissions_are_each_accepted_or_refused_with_429_none_lost(service):
    app, queue = service
    results: list[tuple[int, str | None, str | None]] = []
    lock = threading.Lock()
    with live_server(app) as base:
        start = threading.Barrier(100)

        def post(i: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as h:
                start.wait()
                r = h.post("/generate", json={**GEN, "seed": i})
                body = r.json()
                with lock:
                    results.append((r.status_code, body.get("id"), r.headers.get("Retry-After")))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    codes = Counter(code for code, _, _ in results)
    assert len(results) == 100
    assert set(codes) <= {202, 429}, codes
    assert codes[202] == BOUND, f"the bound is exact under concurrency: {codes}"
    assert all(int(ra) > 0 for code, _, ra in results if code == 429)
    accepted = {job_id for code, job_id, _ in results if code == 202}
    assert len(accepted) == BOUND
    assert set(queue.get_job_ids()) == accepted  # every accepted job is in the queue, nothing else


def test_queue_full_answer_is_429_with_retry_after_and_counted(tmp_path, redis_conn, dualview_bundle):
    queue = unique_queue("full")
    try:
        settings = settings_for(tmp_path, queue, max_queue_length=2, dualview_bundle=dualview_bundle)
        with TestClient(create_app(settings)) as c:
            assert [c.post("/generate", json=GEN).status_code for _ in range(3)] == [202, 202, 429]
            r = c.post("/generate", json=GEN)
            assert r.status_code == 429 and r.json()["error"] == "queue_full"
            assert int(r.headers["Retry-After"]) > 0
            metrics = c.get("/metrics").text
            assert 'mammogen_requests_rejected_total{reason="queue_full"} 2.0' in metrics
            assert f'mammogen_queue_length{{queue="{queue}"}} 2.0' in metrics
    finally:
        purge_queue(redis_conn, queue)


def test_upload_refused_for_a_full_queue_leaves_no_file_behind(tmp_path, redis_conn, mambo_bundle):
    import io

    import numpy as np
    from PIL import Image

    queue = unique_queue("fullup")
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(buf, format="PNG")
    files = {"file": ("a.png", buf.getvalue(), "image/png")}
    try:
        settings = settings_for(tmp_path, queue, max_queue_length=1, mambo_bundle=mambo_bundle)
        with TestClient(create_app(settings)) as c:
            first = c.post("/anomaly-map", files=files, data={"steps": "2"})
            assert first.status_code == 202
            assert c.post("/anomaly-map", files=files, data={"steps": "2"}).status_code == 429
            uploads = tmp_path / "results" / "uploads"
            assert [p.name for p in uploads.iterdir()] == [first.json()["id"]]
    finally:
        purge_queue(redis_conn, queue)


def test_sizes_the_pipeline_would_refuse_are_422_before_queueing(tmp_path, redis_conn, dualview_bundle):
    from tests.service_support import make_mambo_bundle

    queue = unique_queue("sizes")
    try:
        bundle = make_mambo_bundle(tmp_path / "mambo64", s=64)
        settings = settings_for(tmp_path, queue, mambo_bundle=bundle, dualview_bundle=dualview_bundle)
        with TestClient(create_app(settings)) as c:
            r = c.post("/generate", json={"model": "mambo", "height": 64, "width": 80})
            assert r.status_code == 202
            r = c.post("/generate", json={"model": "mambo", "height": 63, "width": 80})
            assert r.status_code == 422 and "64-pixel tile" in r.json()["detail"]
            tiny = _png_bytes(20, 24)
            r = c.post("/super-resolve", files={"file": ("t.png", tiny, "image/png")}, data={"scale": "2"})
            assert r.status_code == 422 and "scale" in r.json()["detail"]
            r = c.post("/super-resolve", files={"file": ("t.png", tiny, "image/png")}, data={"scale": "4"})
            assert r.status_code == 202
            r = c.post("/generate", json={"model": "dualview", "height": 512})
            assert r.status_code == 422 and "fixed size" in r.json()["detail"][0]["msg"]
            assert Queue(queue, connection=redis_conn, serializer=SERIALIZER).count == 2
    finally:
        purge_queue(redis_conn, queue)


def _png_bytes(h: int, w: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((h, w)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
