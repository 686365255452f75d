"""The API refuses before queueing what the worker would refuse after (one check, run in both places),
decides what the header can decide before decoding, and checks the queue bound before either.

Real app, real Redis, the tiny MAMBO bundle on disk (s = 32) and no worker: an input that passes
every check is queued (202), one that does not gets its 4xx and leaves nothing queued or stored.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from rq import Queue
from rq.job import Job

from app.main import create_app
from tests.service_support import purge_queue, settings_for, unique_queue
from workers.queueing import SERIALIZER

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path, redis_conn, mambo_bundle, dualview_bundle) -> Iterator[tuple[TestClient, Queue]]:
    queue = unique_queue("validate")
    settings = settings_for(
        tmp_path, queue, mambo_bundle=mambo_bundle, dualview_bundle=dualview_bundle, max_queue_length=3
    )
    try:
        with TestClient(create_app(settings)) as client:
            yield client, Queue(queue, connection=redis_conn, serializer=SERIALIZER)
    finally:
        purge_queue(redis_conn, queue)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _tiff(array: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def _phantom(h: int = 96, w: int = 80) -> np.ndarray:
    from training.phantoms import make_phantom_case

    return np.round(make_phantom_case(2, (h, w)).cc.image * 65535).astype(np.uint16)


def _post(client: TestClient, route: str, data: bytes, **fields: str):
    return client.post(
        route, files={"file": ("in.bin", data, "application/octet-stream")}, data={"steps": "2", **fields}
    )


def _nothing_queued(client: TestClient, queue: Queue) -> None:
    assert queue.count == 0
    uploads = client.app.state.service.store.root / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_a_real_mammogram_passes_every_check_and_is_queued(api):
    client, queue = api
    for route, fields in (("/anomaly-map", {}), ("/super-resolve", {"scale": "2"})):
        r = _post(client, route, _png(_phantom()), **fields)
        assert r.status_code == 202, r.text
    assert queue.count == 2


@pytest.mark.parametrize(
    ("make", "route", "fields", "words"),
    [
        (lambda: _tiff(np.where(np.eye(64) > 0, np.nan, 0.5).astype(np.float32)), "/anomaly-map", {}, "NaN"),
        (lambda: _tiff(np.full((64, 64), np.inf, np.float32)), "/super-resolve", {"scale": "2"}, "NaN or infinite"),
        (lambda: _png(np.full((96, 96), 40000, np.uint16)), "/anomaly-map", {}, "no breast"),  # blank
        (lambda: _png(np.zeros((96, 96), np.uint16)), "/super-resolve", {"scale": "2"}, "no breast"),
        (lambda: _png(np.full((1, 1), 200, np.uint8)), "/anomaly-map", {}, "1x1"),
        (lambda: _png(_phantom(48, 48)[12:36, 12:36]), "/anomaly-map", {"resolution": "full"}, "32x32"),  # < 1 tile
        (lambda: _png(_phantom(48, 48)[18:30, 4:44]), "/super-resolve", {"scale": "2"}, "32-pixel tile"),
    ],
)
def test_inputs_the_worker_would_refuse_are_refused_before_queueing(api, make, route, fields, words):
    client, queue = api
    r = _post(client, route, make(), **fields)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]
    _nothing_queued(client, queue)


def test_full_queue_is_429_before_the_upload_is_even_decoded(api, monkeypatch):
    client, queue = api
    for _ in range(3):
        assert _post(client, "/anomaly-map", _png(_phantom())).status_code == 202
    decoded = []
    monkeypatch.setattr("app.api.intake.read_image", lambda *a, **k: decoded.append(1) or (None, None))
    r = _post(client, "/anomaly-map", _png(np.zeros((96, 96), np.uint16)))  # would be a 422 if decoded
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert decoded == [] and queue.count == 3


def test_output_size_is_decided_from_the_header_before_decoding(api, monkeypatch):
    client, queue = api
    decoded = []
    monkeypatch.setattr("app.api.intake.read_image", lambda *a, **k: decoded.append(1) or (None, None))
    noise = np.random.default_rng(0).integers(0, 256, (2100, 2100)).astype(np.uint8)
    r = _post(client, "/super-resolve", _png(noise), scale="4")  # 8400 > 8192
    assert r.status_code == 413 and "8400" in r.json()["detail"]
    assert decoded == []
    _nothing_queued(client, queue)


def test_the_worker_runs_the_same_check_and_fails_the_job_with_the_same_message(api, tmp_path, mambo_bundle):
    """A blank upload that reaches the queue anyway (an older API, a script) fails on the worker before
    any model work, with the message the API would have answered."""
    from workers.runtime import WorkerRuntime
    from workers.store import ResultStore
    from workers.submit import Submitter
    from workers.worker import MammogenWorker

    client, queue = api
    blank = _png(np.zeros((96, 96), np.uint16))
    api_detail = _post(client, "/super-resolve", blank, scale="2").json()["detail"]
    store = client.app.state.service.store
    from models.options import SamplingOptions
    from models.requests import SuperResConfig
    from workers.job_requests import StoredUpload, SuperResolveJob

    upload = StoredUpload("input.png", "png", 96, 96, "")
    job = SuperResolveJob(request=SuperResConfig(2, options=SamplingOptions(steps=2)), upload=upload)

    def save(job_id: str) -> None:
        store.save_upload(job_id, io.BytesIO(blank), ".png")

    sub = Submitter(queue, max_queue_length=3, result_ttl_s=600, retries=0).submit(job, timeout_s=600, prepare=save)
    runtime = WorkerRuntime(ResultStore(store.root), {"mambo": mambo_bundle})
    t0 = time.monotonic()
    MammogenWorker([queue], connection=queue.connection, runtime=runtime, heartbeat_s=1).work(burst=True)
    job = Job.fetch(sub.job_id, connection=queue.connection, serializer=SERIALIZER)
    assert job.get_status() == "failed"
    assert job.get_meta()["error"] == {"error": "bad_input", "detail": api_detail, "http_status": 422}
    assert "progress" not in job.get_meta() or job.get_meta()["progress"].get("stage") in (None, "starting")
    assert time.monotonic() - t0 < 60


def test_decode_budget_holds_concurrent_decodes_to_its_capacity():
    from app.api.intake import DecodeBudget

    async def scenario() -> int:
        budget = DecodeBudget(capacity=100)
        peak = 0

        async def decode(size: int) -> None:
            nonlocal peak
            async with budget.reserve(size):
                peak = max(peak, budget.used)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(decode(40) for _ in range(8)), decode(500))  # 500: larger than all, runs alone
        assert budget.used == 0
        return peak

    assert asyncio.run(scenario()) == 100  # never more than the capacity (the big one clamped to it)
