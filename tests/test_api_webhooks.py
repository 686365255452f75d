"""Webhooks against the real service (real Redis, a real `mammogen worker`, uvicorn) and a receiver on
127.0.0.1: one delivery per terminal state with a valid signature, a retry after a 500, attempts in
the job record; URLs the service must not call are refused before anything is queued."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient

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
from workers.webhooks import OUTBOX

pytestmark = pytest.mark.integration
SECRET = "s3cret"


class Receiver:
    """An HTTP receiver that records each POST and answers the statuses scripted per path (then 200)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.script: dict[str, list[int]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                statuses = receiver.script.get(self.path, [])
                status = statuses.pop(0) if statuses else 200
                receiver.received.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "answer": status}
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict]:
        return [r for r in self.received if r["path"] == path]


def verified(request: dict) -> dict:
    """What a receiver does (docs/SERVICE.md): recompute the signature over timestamp + body."""
    timestamp = request["headers"]["X-Mammogen-Timestamp"]
    expected = (
        "sha256=" + hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256).hexdigest()
    )
    assert hmac.compare_digest(expected, request["headers"]["X-Mammogen-Signature"])
    return json.loads(request["body"])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def service(tmp_path_factory, mambo_bundle, dualview_bundle) -> Iterator[tuple[str, object]]:
    conn = redis_or_skip()
    tmp = tmp_path_factory.mktemp("webhooks")
    queue = unique_queue("webhooks")
    settings = settings_for(
        tmp,
        queue,
        mambo_bundle=mambo_bundle,
        dualview_bundle=dualview_bundle,
        webhook_secret=SECRET,
        webhook_allowed_hosts=["127.0.0.1"],
        webhook_backoff_s=0.2,
    )
    worker = WorkerProcess(settings, tmp / "worker.log")
    try:
        worker.wait_alive(conn)
        with live_server(create_app(settings)) as url:
            yield url, conn
    finally:
        worker.stop()
        purge_queue(conn, queue)


def _final_webhook(client: httpx.Client, location: str) -> dict:
    return wait_for(
        lambda: (w := client.get(location).json()["webhook"]) and w["status"] in ("delivered", "failed") and w,
        180,
        what="the webhook delivery",
    )


@pytest.mark.slow
def test_a_finished_job_is_delivered_once_signed_after_a_retry_of_a_500(service, receiver):
    url, conn = service
    receiver.script["/flaky"] = [500]
    with httpx.Client(base_url=url, timeout=60) as client:
        body = {"model": "dualview", "steps": 2, "seed": 1, "callback_url": f"{receiver.url}/flaky"}
        r = client.post("/generate", json=body)
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        webhook = _final_webhook(client, location)
        final = client.get(location).json()
    job_id = final["id"]
    assert webhook["status"] == "delivered" and [a["status_code"] for a in webhook["attempts"]] == [500, 200]
    got = receiver.at("/flaky")
    assert [g["answer"] for g in got] == [500, 200]  # one retry, then exactly one delivery
    for g in got:
        record = verified(g)
        assert record["id"] == job_id and record["status"] == "succeeded" and record["results"]
        assert g["headers"]["X-Mammogen-Event"] == "job.succeeded"
    assert conn.zscore(OUTBOX, job_id) is None  # nothing left to send: no second delivery will come


@pytest.mark.slow
def test_a_cancelled_job_is_delivered_once_as_cancelled(service, receiver):
    url, _ = service
    with httpx.Client(base_url=url, timeout=60) as client:
        body = {"model": "mambo", "height": 96, "width": 96, "steps": 1000, "callback_url": f"{receiver.url}/cancel"}
        location = client.post("/generate", json=body).headers["Location"]
        assert client.delete(location).status_code == 202
        webhook = _final_webhook(client, location)
    assert webhook["status"] == "delivered" and webhook["event"] == "job.cancelled"
    got = receiver.at("/cancel")
    assert len(got) == 1 and verified(got[0])["status"] == "cancelled"


@pytest.fixture
def strict_api(tmp_path, redis_conn, mambo_bundle, dualview_bundle) -> Iterator[TestClient]:
    queue = unique_queue("hooks")
    settings = settings_for(
        tmp_path, queue, mambo_bundle=mambo_bundle, dualview_bundle=dualview_bundle, webhook_secret=SECRET
    )
    try:
        with TestClient(create_app(settings)) as client:
            yield client
    finally:
        purge_queue(redis_conn, queue)


@pytest.mark.parametrize(
    "callback",
    [
        "ftp://example.org/hook",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://[fe80::1]/hook",
        "http://127.0.0.1:9/hook",  # loopback: not listed
        "http://user:pw@example.org/hook",
    ],
)
def test_urls_the_service_must_not_call_are_refused_before_queueing(strict_api, callback):
    r = strict_api.post("/generate", json={"model": "dualview", "steps": 1, "callback_url": callback})
    assert r.status_code == 422 and "callback_url" in r.text


def test_without_a_secret_a_callback_is_refused(tmp_path, redis_conn, dualview_bundle):
    queue = unique_queue("nohook")
    try:
        with TestClient(create_app(settings_for(tmp_path, queue, dualview_bundle=dualview_bundle))) as client:
            r = client.post("/generate", json={"model": "dualview", "callback_url": "http://127.0.0.1/x"})
        assert r.status_code == 422 and "MAMMOGEN_WEBHOOK_SECRET" in r.json()["detail"]
    finally:
        purge_queue(redis_conn, queue)
