"""What a client may not learn: server paths, Redis addresses, object internals, decoder plugins,
library limits instead of ours, and URLs built from its own Host header. /metrics follows the key."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from app.main import create_app
from app.settings import Settings
from tests.service_support import black_png, purge_queue, settings_for, unique_queue

pytestmark = pytest.mark.integration

API_KEY = "k3y"
ADDRESS = re.compile(r"0x[0-9a-f]{6,}")


def _assert_no_internals(text: str, *paths: object) -> None:
    assert not ADDRESS.search(text), text
    for bad in ("_max_size", "TemporaryFile", "SpooledTemporaryFile", "UploadFile(", "pylibjpeg", "gdcm", "pillow:"):
        assert bad not in text, f"{bad!r} leaked: {text}"
    for p in paths:
        assert str(p) not in text, f"server path {p} leaked: {text}"


@pytest.fixture
def client(tmp_path, redis_conn, dualview_bundle) -> Iterator[TestClient]:
    queue = unique_queue("leaks")
    settings = settings_for(
        tmp_path,
        queue,
        api_key=API_KEY,
        dualview_bundle=dualview_bundle,
        mambo_bundle=tmp_path / "no-mambo-bundle",
        max_image_pixels=512 * 512,
        max_image_side=30000,  # so the pixel count, not the side, is what refuses the bomb below
    )
    try:
        with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
            yield c
    finally:
        purge_queue(redis_conn, queue)


def test_readyz_without_redis_does_not_name_its_host_or_port(tmp_path):
    settings = Settings(redis_url="redis://127.0.0.1:1/0", result_dir=tmp_path, queue_name="nowhere")
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "Redis" in r.json()["detail"]
        assert "127.0.0.1" not in r.text and ":1" not in r.text and "Errno" not in r.text


def test_models_and_503_name_bundles_without_server_paths(client, dualview_bundle, tmp_path):
    r = client.get("/models")
    assert r.status_code == 200
    models = {m["kind"]: m for m in r.json()["models"]}
    assert models["dualview"]["path"] == dualview_bundle.name
    assert models["mambo"]["path"] == "no-mambo-bundle"
    _assert_no_internals(r.text, dualview_bundle.parent, tmp_path)
    r = client.post("/generate", json={"model": "mambo", "height": 64, "width": 64, "steps": 2})
    assert r.status_code == 503 and "no-mambo-bundle" in r.json()["detail"]
    _assert_no_internals(r.text, tmp_path)


def test_unknown_form_field_is_named_without_echoing_the_upload_object(client):
    png = io.BytesIO()
    Image.fromarray(np.full((64, 64), 3, np.uint8)).save(png, format="PNG")
    r = client.post(
        "/super-resolve", files={"file": ("a.png", png.getvalue(), "image/png")}, data={"scale": "2", "stepz": "2"}
    )
    assert r.status_code == 422 and "stepz" in r.text
    _assert_no_internals(r.text)


def test_undecodable_tiff_error_has_no_memory_address(client):
    r = client.post("/anomaly-map", files={"file": ("a.tif", b"II*\x00" + b"\x07" * 400, "image/tiff")})
    assert r.status_code in (415, 422)
    _assert_no_internals(r.text)


def test_undecodable_lossy_jpeg_dicom_error_does_not_list_decoder_plugins(client, mambo_bundle):
    data = Path(get_testdata_file("JPEG-lossy.dcm")).read_bytes()  # 12-bit JPEG Extended: no decoder here
    settings = client.app.state.settings.model_copy(update={"mambo_bundle": mambo_bundle})  # decoding needs one
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        r = c.post("/anomaly-map", files={"file": ("a.dcm", data, "application/dicom")})
    assert r.status_code == 415
    assert "JPEG Extended" in r.json()["detail"]
    _assert_no_internals(r.text)


def test_png_bomb_413_quotes_the_configured_limit_not_pillows(client):
    r = client.post("/anomaly-map", files={"file": ("bomb.png", black_png(30000, 30000, rows=4), "image/png")})
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert str(512 * 512) in detail and "178956970" not in detail and "DOS" not in detail


def test_redirects_and_urls_never_use_the_host_header(client):
    r = client.get("/healthz/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert "evil.example" not in r.headers.get("location", "")
    r = client.post("/generate", json={"model": "dualview", "steps": 2}, headers={"Host": "evil.example"})
    assert r.status_code == 202 and r.headers["Location"].startswith("/jobs/")


def test_metrics_need_the_key_when_one_is_set_unless_made_public(client, tmp_path, dualview_bundle):
    assert client.get("/metrics", headers={"X-API-Key": ""}).status_code == 401
    assert client.get("/metrics").status_code == 200
    settings = client.app.state.settings.model_copy(update={"metrics_public": True})
    with TestClient(create_app(settings)) as open_client:
        assert open_client.get("/metrics").status_code == 200


def test_public_base_url_is_an_http_origin_without_trailing_slash(tmp_path):
    from pydantic import ValidationError

    assert Settings(public_base_url="https://mg.example.org/", result_dir=tmp_path).public_base_url == (
        "https://mg.example.org"
    )
    with pytest.raises(ValidationError, match="http"):
        Settings(public_base_url="javascript:alert(1)", result_dir=tmp_path)
