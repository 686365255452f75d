"""Every malformed request is answered with its 4xx before anything is stored or queued.

Runs the real app (lifespan, middleware) against the real Redis; no worker is needed because
nothing here may reach one.
"""

from __future__ import annotations

import hmac
import io
import select
import socket
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file
from rq import Queue

from app.main import create_app
from tests.service_support import live_server, purge_queue, settings_for, unique_queue
from workers.queueing import SERIALIZER

pytestmark = pytest.mark.integration

API_KEY = "s3cret-key"
MAX_UPLOAD = 64 * 1024


@pytest.fixture
def api(tmp_path, redis_conn, dualview_bundle) -> Iterator[tuple[TestClient, Queue]]:
    queue = unique_queue("inputs")
    settings = settings_for(
        tmp_path,
        queue,
        api_key=API_KEY,
        max_upload_bytes=MAX_UPLOAD,
        max_image_pixels=200 * 200,
        max_image_side=256,
        dualview_bundle=dualview_bundle,
        mambo_bundle=tmp_path / "no-mambo-bundle",  # requests that pass every check end at a clear 503
    )
    try:
        with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
            yield client, Queue(queue, connection=redis_conn, serializer=SERIALIZER)
    finally:
        purge_queue(redis_conn, queue)


def _png(h: int, w: int, bits: int = 16) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 2**bits, size=(h, w), dtype=np.uint16 if bits == 16 else np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _dicom_bytes() -> bytes:
    return open(get_testdata_file("CT_small.dcm"), "rb").read()


def _upload(client: TestClient, data: bytes, name: str = "x.png", ctype: str = "image/png", **fields):
    return client.post("/anomaly-map", files={"file": (name, data, ctype)}, data={"steps": "2", **fields})


def _assert_nothing_queued(client: TestClient, queue: Queue) -> None:
    assert queue.count == 0
    store_root = client.app.state.service.store.root
    assert not (store_root / "uploads").exists() or not any((store_root / "uploads").iterdir())


def test_upload_over_the_limit_is_413_by_declared_length(api):
    client, queue = api
    r = _upload(client, _png(200, 200) + b"\0" * MAX_UPLOAD)
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"
    _assert_nothing_queued(client, queue)


def test_upload_without_content_length_is_counted_and_refused_with_413(api):
    client, queue = api

    def body() -> Iterator[bytes]:  # chunked transfer: the server cannot trust any declared size
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(4):
            yield b"\0" * 65536

    r = client.post("/anomaly-map", content=body(), headers={"Content-Type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
    _assert_nothing_queued(client, queue)


def test_streamed_upload_stops_being_read_at_the_limit(api):
    """Over a real socket: the server answers 413 and closes long before a 64 MiB body is sent."""
    client, queue = api
    with live_server(client.app) as base:
        port = int(base.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /anomaly-map HTTP/1.1\r\nHost: x\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=xx\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        # a well-formed part header first: the body must be refused for its size, not as bad multipart
        head = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        head += b"Content-Type: image/png\r\n\r\n"
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        chunk = b"\0" * 65536
        sent = 0
        for _ in range(1024):  # up to 64 MiB
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # reset: the server stopped reading
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                break
        reply = b""
        try:
            sock.settimeout(10)
            while b"\r\n\r\n" not in reply:
                data = sock.recv(4096)
                if not data:
                    break
                reply += data
        except OSError:
            pass
        sock.close()
    assert sent < 32 * 1024 * 1024, f"the server read {sent} bytes past a {MAX_UPLOAD}-byte limit"
    if reply:  # the reply may be lost to the reset; when it arrives it is the 413
        assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    _assert_nothing_queued(client, queue)


@pytest.mark.parametrize(
    ("data", "name", "ctype"),
    [
        (b"\xff\xd8\xff\xe0" + b"\0" * 200, "scan.png", "image/png"),  # a JPEG claiming to be PNG
        (b"%PDF-1.7 " + b"x" * 300, "scan.dcm", "application/dicom"),
        (b"hello, this is plainly not an image at all" * 10, "scan.png", "image/png"),
    ],
)
def test_non_image_is_415_whatever_its_name_and_declared_type(api, data, name, ctype):
    client, queue = api
    r = _upload(client, data, name, ctype)
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media"
    _assert_nothing_queued(client, queue)


def test_png_sent_as_dicom_is_sniffed_and_accepted_by_content(api):
    client, queue = api
    r = _upload(client, _png(64, 64), "scan.dcm", "application/dicom")
    assert r.status_code != 415  # content decides; it gets past sniffing (503: no MAMBO bundle here)
    assert r.status_code == 503 and "no-mambo-bundle" in r.json()["detail"]
    _assert_nothing_queued(client, queue)


def test_truncated_png_is_422_naming_the_problem(api):
    client, queue = api
    data = _png(128, 128)
    r = _upload(client, data[: len(data) // 2])
    assert r.status_code == 422
    assert "PNG" in r.json()["detail"]
    _assert_nothing_queued(client, queue)


def test_truncated_dicom_pixel_data_is_422_naming_the_problem(api):
    client, queue = api
    data = _dicom_bytes()
    r = _upload(client, data[: len(data) - 5000], "ct.dcm", "application/dicom")
    assert r.status_code == 422
    assert "truncated" in r.json()["detail"].lower() or "DICOM" in r.json()["detail"]
    _assert_nothing_queued(client, queue)


def test_hostile_dicom_header_claiming_a_huge_image_is_413_before_decoding(api):
    client, queue = api
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns = 60000, 60000  # pixel data stays tiny: a decompression-bomb style header
    buf = io.BytesIO()
    ds.save_as(buf)
    r = _upload(client, buf.getvalue(), "ct.dcm", "application/dicom")
    assert r.status_code == 413
    assert "60000" in r.json()["detail"]
    _assert_nothing_queued(client, queue)


def test_image_with_too_many_pixels_is_413(api):
    client, queue = api
    r = _upload(client, _png(220, 220, bits=8))  # 48400 px > 40000, under the upload byte limit
    assert r.status_code == 413
    assert "pixels" in r.json()["detail"]
    _assert_nothing_queued(client, queue)


def test_empty_upload_is_422(api):
    client, queue = api
    r = _upload(client, b"")
    assert r.status_code == 422
    _assert_nothing_queued(client, queue)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "dualview", "steps": 0},
        {"model": "dualview", "sampler": "euler"},
        {"model": "dualview", "count": 1000},
        {"model": "dualview", "formats": ["jpeg"]},
        {"model": "dualview", "seed": -1},
        {"model": "gan"},
        {"model": "dualview", "stepz": 10},  # misspelt parameter: refused, not ignored
    ],
)
def test_bad_generate_parameters_are_422_naming_the_field(api, body):
    client, queue = api
    r = client.post("/generate", json=body)
    assert r.status_code == 422, r.text
    bad = [tuple(e["loc"]) for e in r.json()["detail"]]
    assert bad and all(loc[0] == "body" for loc in bad)
    _assert_nothing_queued(client, queue)


def test_bad_upload_form_parameters_are_422(api):
    client, queue = api
    r = client.post(
        "/super-resolve", files={"file": ("a.png", _png(32, 32), "image/png")}, data={"scale": "1", "steps": "2"}
    )
    assert r.status_code == 422
    assert any("scale" in e["loc"] for e in r.json()["detail"])
    r = client.post(
        "/super-resolve", files={"file": ("a.png", _png(32, 32), "image/png")}, data={"scale": "2", "stepz": "2"}
    )
    assert r.status_code == 422
    assert "stepz" in r.text
    _assert_nothing_queued(client, queue)


def test_requested_output_larger_than_the_bounds_is_413(api):
    client, queue = api
    r = client.post("/generate", json={"model": "mambo", "height": 4096, "width": 4096})
    assert r.status_code == 413
    _assert_nothing_queued(client, queue)


def test_missing_or_wrong_api_key_is_401_and_health_stays_open(api):
    client, queue = api
    for headers in ({"X-API-Key": ""}, {"X-API-Key": "s3cret-kez"}, {"X-API-Key": API_KEY + "x"}):
        r = client.post("/generate", json={"model": "dualview", "steps": 2}, headers=headers)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == "ApiKey"
        assert client.get("/jobs/whatever", headers=headers).status_code == 401
    assert client.get("/healthz", headers={"X-API-Key": ""}).status_code == 200
    _assert_nothing_queued(client, queue)


def test_api_key_is_compared_in_constant_time(api, monkeypatch):
    client, _ = api
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("app.api.deps.hmac.compare_digest", spy)
    assert client.get("/models", headers={"X-API-Key": "nope"}).status_code == 401
    assert calls == [(b"nope", API_KEY.encode())]


def test_unknown_job_is_404(api):
    client, _ = api
    assert client.get("/jobs/0123456789abcdef").status_code == 404
    assert client.get("/jobs/..%2F..%2Fetc").status_code == 404
    assert client.get("/jobs/abc/results/..%2Fsecret").status_code == 404
    assert client.delete("/jobs/0123456789abcdef").status_code == 404
