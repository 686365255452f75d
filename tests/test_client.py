"""app.client against the real service (real Redis, a real `mammogen worker`, uvicorn): every job kind
submitted, followed to its end with progress, results downloaded and their sha256 verified; cancel;
refusals as ServiceError; a result that does not match its record is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from app.client import IntegrityError, MammogenClient, ServiceError
from app.main import create_app
from tests.imaging_support import phantom_dicom
from tests.service_support import WorkerProcess, live_server, purge_queue, redis_or_skip, settings_for, unique_queue

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(tmp_path_factory, mambo_bundle, dualview_bundle) -> Iterator[MammogenClient]:
    conn = redis_or_skip()
    tmp = tmp_path_factory.mktemp("client")
    queue = unique_queue("client")
    settings = settings_for(tmp, queue, mambo_bundle=mambo_bundle, dualview_bundle=dualview_bundle, api_key="key")
    worker = WorkerProcess(settings, tmp / "worker.log")
    try:
        worker.wait_alive(conn)
        with live_server(create_app(settings)) as url, MammogenClient(url, api_key="key") as mg:
            yield mg
    finally:
        worker.stop()
        purge_queue(conn, queue)


def _check_downloads(paths, record) -> None:
    assert sorted(p.name for p in paths) == sorted(link["name"] for link in record["results"])
    by_name = {link["name"]: link for link in record["results"]}
    for p in paths:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == by_name[p.name]["sha256"]


def test_generate_mambo_and_dualview_wait_with_progress_and_download(client, tmp_path, capsys):
    for params in (
        {"model": "mambo", "height": 64, "width": 64, "steps": 3, "seed": 1, "formats": ["png16", "npy"]},
        {"model": "dualview", "steps": 2, "seed": 2},
    ):
        job = client.generate(**params)
        record = client.wait(job, progress=True)
        assert record["status"] == "succeeded" and record["progress"]["fraction"] == 1.0
        _check_downloads(client.download(record, tmp_path / params["model"]), record)
    assert "100%" in capsys.readouterr().err  # the tqdm bar reached the end


def test_super_resolve_and_anomaly_map_of_files(client, tmp_path):
    from training.phantoms import make_phantom_case

    low = make_phantom_case(4, (48, 40)).cc.image
    png = tmp_path / "low.png"
    Image.fromarray(np.round(low * 65535).astype(np.uint16)).save(png)
    record = client.wait(client.super_resolve(png, scale=2, steps=2, seed=1), progress=False)
    assert record["status"] == "succeeded"
    _check_downloads(client.download(record["id"], tmp_path / "sr"), record)

    view = make_phantom_case(3, (96, 96), lesions=True).cc
    dcm = phantom_dicom(tmp_path / "in.dcm", view.image, laterality=view.laterality, view="CC")
    record = client.wait(client.anomaly_map(dcm.read_bytes(), steps=3, repeats=1, seed=0), progress=False)
    assert record["status"] == "succeeded"
    paths = client.download(record, tmp_path / "anomaly")
    assert {"heatmap.png", "overlay.png"} <= {p.name for p in paths}


def test_cancel_and_refusals(client, tmp_path):
    job = client.generate(model="mambo", height=96, width=96, steps=1000)
    assert client.cancel(job)["id"] == job["id"]
    assert client.wait(job, progress=False)["status"] == "cancelled"
    assert client.cancel(job) is None  # ended: deleted
    with pytest.raises(ServiceError) as refused:
        client.job(job)
    assert refused.value.status == 404 and refused.value.error == "not_found"
    with pytest.raises(ServiceError) as refused:
        client.generate(model="mambo", steps=0)
    assert refused.value.status == 422
    with pytest.raises(ServiceError) as refused:  # the test bundle has no lesion network
        client.insert_lesion(b"not read", [{"kind": "mass", "center": [40, 40], "diameter_px": 8}], steps=2)
    assert refused.value.status == 503 and "has no lesion network" in refused.value.detail
    with pytest.raises(ServiceError) as refused:
        client.download(job, tmp_path)  # a job that did not succeed has no results
    assert refused.value.status in (404, 409)


def test_a_result_that_does_not_match_its_record_is_refused_and_not_kept(client, tmp_path):
    record = client.wait(client.generate(model="dualview", steps=1, seed=3), progress=False)
    tampered = {**record, "results": [{**record["results"][0], "sha256": "0" * 64}]}
    with pytest.raises(IntegrityError, match="sha256"):
        client.download(tampered, tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []
