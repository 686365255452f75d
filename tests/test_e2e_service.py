"""End to end over HTTP with a real `mammogen worker` process and the real Redis: every endpoint,
results downloaded and checked against the job record, DICOM validated, cancel of a queued and
of a running job, the model list and readiness."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.dicom_validation import dciodvfy_bytes
from tests.imaging_support import phantom_dicom
from tests.service_support import WorkerProcess, purge_queue, redis_or_skip, settings_for, unique_queue, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(tmp_path_factory, dualview_bundle, mambo_bundle) -> Iterator[TestClient]:
    conn = redis_or_skip()
    tmp = tmp_path_factory.mktemp("e2e")
    queue = unique_queue("e2e")
    settings = settings_for(tmp, queue, dualview_bundle=dualview_bundle, mambo_bundle=mambo_bundle)
    worker = WorkerProcess(settings, tmp / "worker.log")
    try:
        worker.wait_alive(conn)
        with TestClient(create_app(settings)) as client:
            client.worker = worker  # type: ignore[attr-defined]
            yield client
    finally:
        worker.stop()
        purge_queue(conn, queue)


def _finish(client: TestClient, location: str, timeout: float = 120) -> dict:
    info = wait_for(
        lambda: (
            (j := client.get(location, params={"wait": 5}).json())["status"] in ("succeeded", "failed", "cancelled")
            and j
        ),
        timeout,
        what=f"{location} to end",
    )
    assert info["status"] == "succeeded", f"{info}\n{client.worker.log()}"  # type: ignore[attr-defined]
    return info


def _download_all(client: TestClient, info: dict) -> dict[str, bytes]:
    """Every result link downloads, and its bytes match the size and sha256 in the job record."""
    out = {}
    assert info["results"] and all(link["url"].startswith(f"/jobs/{info['id']}/results/") for link in info["results"])
    for link in info["results"]:
        r = client.get(link["url"])
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(link["media_type"])
        assert len(r.content) == link["size"]
        assert hashlib.sha256(r.content).hexdigest() == link["sha256"] == r.headers["X-Content-SHA256"]
        out[link["name"]] = r.content
    return out


def test_readyz_sees_the_worker_and_models_lists_its_verified_bundles(service, dualview_bundle):
    r = service.get("/readyz")
    assert r.status_code == 200 and r.json()["workers"] == 1
    models = {m["kind"]: m for m in service.get("/models").json()["models"]}
    assert models["dualview"]["loaded"] and models["dualview"]["version"] == "0.0.1"
    assert models["dualview"]["detail"]["verified"] is True
    assert models["dualview"]["path"] == dualview_bundle.name  # the folder name, never a server path
    manifest = dualview_bundle / "manifest.json"
    assert models["dualview"]["detail"]["manifest_sha256"] == hashlib.sha256(Path(manifest).read_bytes()).hexdigest()
    assert all(len(h) == 64 for h in models["dualview"]["detail"]["file_sha256"].values())
    assert models["mambo"]["loaded"] and models["mambo"]["name"] == "test-mambo"
    assert models["mambo"]["workers"] == [service.worker.name]


def test_generate_dualview_pair_end_to_end_in_every_format(service, tmp_path):
    r = service.post(
        "/generate",
        json={
            "model": "dualview",
            "count": 1,
            "steps": 3,
            "seed": 5,
            "laterality": "L",
            "formats": ["png16", "npy", "dicom"],
        },
    )
    assert r.status_code == 202
    info = _finish(service, r.headers["Location"])
    files = _download_all(service, info)
    assert set(files) == {f"pair00_{v}.{e}" for v in ("cc", "mlo") for e in ("png", "npy", "dcm")}
    png = np.asarray(Image.open(io.BytesIO(files["pair00_cc.png"])))
    assert png.dtype == np.uint16 and png.shape == (32, 32)
    npy = np.load(io.BytesIO(files["pair00_cc.npy"]))
    assert np.allclose(npy, png / 65535.0, atol=1e-4)
    cc = pydicom.dcmread(io.BytesIO(files["pair00_cc.dcm"]))
    mlo = pydicom.dcmread(io.BytesIO(files["pair00_mlo.dcm"]))
    assert cc.ConversionType == "SYN" and "DERIVED" in cc.ImageType
    assert "NOT FOR DIAGNOSTIC USE" in cc.SeriesDescription
    assert (cc.ImageLaterality, cc.ViewPosition, mlo.ViewPosition) == ("L", "CC", "MLO")
    assert cc.StudyInstanceUID == mlo.StudyInstanceUID and cc.SeriesInstanceUID == mlo.SeriesInstanceUID
    assert "test-dualview" in str(cc.ContributingEquipmentSequence[0].ManufacturerModelName)
    for name in ("pair00_cc.dcm", "pair00_mlo.dcm"):
        assert dciodvfy_bytes(files[name], tmp_path) == []
    assert info["summary"]["seeds"] == [5]
    assert info["progress"]["fraction"] == 1.0 and info["timings"]["run_s"] > 0


def test_generate_mambo_end_to_end_with_dicom(service, tmp_path):
    r = service.post(
        "/generate",
        json={
            "model": "mambo",
            "height": 96,
            "width": 64,
            "steps": 2,
            "seed": 1,
            "stitching": "wavefront",
            "formats": ["png16", "dicom"],
        },
    )
    assert r.status_code == 202
    info = _finish(service, r.headers["Location"])
    files = _download_all(service, info)
    png = np.asarray(Image.open(io.BytesIO(files["image00.png"])))
    assert png.shape == (96, 64) and png.dtype == np.uint16
    ds = pydicom.dcmread(io.BytesIO(files["image00.dcm"]))
    assert (ds.Rows, ds.Columns, ds.ConversionType) == (96, 64, "SYN")
    assert dciodvfy_bytes(files["image00.dcm"], tmp_path) == []
    stats = info["summary"]["stats"]  # one lock-step run for all the seeds
    assert stats["stitching"] == "wavefront" and stats["model_evaluations"] > 0
    assert info["summary"]["acceleration"]["setting"] == "auto"  # what the networks ran in, over HTTP too


def _phantom_dicom(tmp: Path) -> bytes:

    from training.phantoms import make_phantom_case

    view = make_phantom_case(3, (96, 96), lesions=True).cc
    path = phantom_dicom(tmp / "in.dcm", view.image, laterality=view.laterality, view="CC", patient_id="PH1")
    return path.read_bytes()


def test_anomaly_map_of_an_uploaded_dicom_keeps_its_study_in_a_new_series(service, tmp_path):
    data = _phantom_dicom(tmp_path)
    src = pydicom.dcmread(io.BytesIO(data))
    r = service.post(
        "/anomaly-map",
        files={"file": ("in.dcm", data, "application/dicom")},
        data={"steps": "4", "sampler": "ddim", "repeats": "2", "seed": "0", "formats": ["png16", "npy", "dicom"]},
    )
    assert r.status_code == 202, r.text
    info = _finish(service, r.headers["Location"])
    files = _download_all(service, info)
    assert {"heatmap.png", "heatmap.npy", "heatmap.dcm", "mask.png", "overlay.png", "reconstruction.png"} <= set(files)
    heat = np.load(io.BytesIO(files["heatmap.npy"]))
    assert heat.shape == (96, 96) and np.isfinite(heat).all() and heat.max() > 0
    out = pydicom.dcmread(io.BytesIO(files["heatmap.dcm"]))
    assert out.StudyInstanceUID == src.StudyInstanceUID and out.PatientID == src.PatientID
    assert out.SeriesInstanceUID != src.SeriesInstanceUID and out.SOPInstanceUID != src.SOPInstanceUID
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert dciodvfy_bytes(files["heatmap.dcm"], tmp_path) == []
    assert info["summary"]["stats"]["lambda"] == 700


def test_super_resolve_of_an_uploaded_png_doubles_its_size(service, tmp_path):
    from training.phantoms import make_phantom_case

    low = make_phantom_case(4, (48, 40)).cc.image
    buf = io.BytesIO()
    Image.fromarray(np.round(low * 65535).astype(np.uint16)).save(buf, format="PNG")
    r = service.post(
        "/super-resolve",
        files={"file": ("low.png", buf.getvalue(), "image/png")},
        data={"scale": "2", "steps": "2", "seed": "1", "formats": ["png16", "dicom"]},
    )
    assert r.status_code == 202, r.text
    info = _finish(service, r.headers["Location"])
    files = _download_all(service, info)
    out = np.asarray(Image.open(io.BytesIO(files["superres.png"])))
    assert out.shape == (96, 80) and out.dtype == np.uint16
    ds = pydicom.dcmread(io.BytesIO(files["superres.dcm"]))
    assert (ds.Rows, ds.Columns) == (96, 80) and "DERIVED" in ds.ImageType
    assert "super-resolution" in ds.DerivationDescription
    assert dciodvfy_bytes(files["superres.dcm"], tmp_path) == []
    assert info["summary"]["stats"]["output_size"] == [96, 80]


def test_running_job_is_stopped_between_steps_and_queued_job_never_runs(service):
    long = {"model": "dualview", "count": 1, "steps": 1000, "sampler": "ddpm", "seed": 0}
    running = service.post("/generate", json=long).headers["Location"]
    queued = service.post("/generate", json=long).headers["Location"]
    info = wait_for(
        lambda: (j := service.get(running).json())["status"] == "running" and (j["progress"]["step"] or 0) > 0 and j,
        60,
        what="the first job to be running",
    )
    assert info["progress"]["stage"] == "dualview" and 0 < info["progress"]["fraction"] < 1
    assert info["progress"]["eta_s"] is not None and info["progress"]["eta_s"] > 0
    q = service.get(queued).json()
    assert (q["status"], q["queue_position"]) == ("queued", 0)
    assert q["progress"]["eta_s"] > 0  # from the run times of the jobs this queue finished before

    r = service.delete(queued)
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    t0 = time.monotonic()
    r = service.delete(running)
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    done = wait_for(
        lambda: (j := service.get(running).json())["status"] != "running" and j, 30, what="the running job to stop"
    )
    stopped_after = time.monotonic() - t0
    assert done["status"] == "cancelled" and done["error"]["error"] == "cancelled"
    assert done["rq_status"] == "failed" and done["retries_left"] == 0  # recorded by the public hook, not retried
    assert done["progress"]["step"] < 1000
    assert stopped_after < 10, f"cancel took {stopped_after:.1f} s"
    q = service.get(queued).json()
    assert q["status"] == "cancelled" and q["started_at"] is None
    # a cancel is a normal outcome: one INFO line in the worker's log, no ERROR, no traceback
    log = service.worker.log()  # type: ignore[attr-defined]
    lines = [line for line in log.splitlines() if done["id"] in line and "cancel" in line.lower()]
    assert len(lines) == 1 and "INFO" in lines[0], log
    assert "Traceback" not in log and "CancelledError" not in log, log
    # the worker is still serving: a new job runs to the end
    _finish(service, service.post("/generate", json={"model": "dualview", "steps": 2}).headers["Location"])


def test_delete_of_a_finished_job_removes_its_record_and_files(service):
    info = _finish(service, service.post("/generate", json={"model": "dualview", "steps": 2}).headers["Location"])
    url = info["results"][0]["url"]
    assert service.get(url).status_code == 200
    assert service.delete(f"/jobs/{info['id']}").status_code == 204
    assert service.get(f"/jobs/{info['id']}").status_code == 404
    assert service.get(url).status_code == 404
