"""The service with a real PACS: results delivered to Orthanc (STOW-RS and C-STORE) read back equal,
inputs taken from Orthanc by UIDs, and an unreachable PACS never fails a job nor loses its files."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from models.imaging.dicom_seg import read_segmentation
from models.imaging.dicom_write import generate_uid, write_mg_phantom_dicom
from tests.dicom_validation import dciodvfy_bytes
from tests.service_support import (
    WorkerProcess,
    free_port,
    purge_queue,
    redis_or_skip,
    settings_for,
    unique_queue,
    wait_for,
)
from tests.test_e2e_service import _download_all, _finish

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pacs_service(tmp_path_factory, orthanc, dualview_bundle, mambo_bundle) -> Iterator[TestClient]:
    conn = redis_or_skip()
    tmp = tmp_path_factory.mktemp("pacs-e2e")
    queue = unique_queue("pacs")
    pacs = {
        "orthanc": {"kind": "dicomweb", "url": orthanc.dicomweb_url, "timeout_s": 10},
        "orthanc-dimse": {
            "kind": "dimse",
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "ae_title": orthanc.aet,
            "timeout_s": 10,
        },
        "down": {"kind": "dicomweb", "url": f"http://127.0.0.1:{free_port()}/dicom-web", "timeout_s": 2},
    }
    settings = settings_for(
        tmp,
        queue,
        dualview_bundle=dualview_bundle,
        mambo_bundle=mambo_bundle,
        pacs=pacs,
        delivery_attempts=2,
        delivery_backoff_s=0.5,
        delivery_backoff_max_s=0.5,
    )
    worker = WorkerProcess(settings, tmp / "worker.log")
    try:
        worker.wait_alive(conn)
        with TestClient(create_app(settings)) as client:
            client.worker = worker  # type: ignore[attr-defined]
            client.orthanc = orthanc  # type: ignore[attr-defined]
            yield client
    finally:
        worker.stop()
        purge_queue(conn, queue)


def _delivery_done(client: TestClient, info: dict, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (d := client.get(f"/jobs/{info['id']}").json()["delivery"])["status"] in ("delivered", "failed") and d,
        timeout,
        what="delivery to end",
    )


def _arrived_equal(client: TestClient, files: dict[str, bytes], names: list[str]) -> dict[str, pydicom.Dataset]:
    """Each named result is in Orthanc with the same identity, marks and pixels as the downloaded file."""
    out = {}
    for name in names:
        sent = pydicom.dcmread(io.BytesIO(files[name]))
        stored_bytes = client.orthanc.instance_file(sent.SOPInstanceUID)  # type: ignore[attr-defined]
        assert stored_bytes is not None, f"{name} is not in Orthanc"
        stored = pydicom.dcmread(io.BytesIO(stored_bytes))
        for keyword in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "SyntheticData", "ImageType"):
            assert stored.get(keyword) == sent.get(keyword), (name, keyword)
        np.testing.assert_array_equal(stored.pixel_array, sent.pixel_array)
        out[name] = stored
    return out


def _input_in_orthanc(client: TestClient, tmp_path) -> pydicom.Dataset:
    from training.phantoms import make_phantom_case

    view = make_phantom_case(5, (96, 96), lesions=True).cc
    path = write_mg_phantom_dicom(
        tmp_path / "in.dcm",
        view.image,
        laterality=view.laterality,
        view="CC",
        patient_id="PHPACS",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
    )
    client.orthanc.upload(path.read_bytes())  # type: ignore[attr-defined]
    return pydicom.dcmread(path)


def _by_uids(ds: pydicom.Dataset, server: str = "orthanc") -> dict[str, str]:
    return {
        "pacs": server,
        "study_uid": ds.StudyInstanceUID,
        "series_uid": ds.SeriesInstanceUID,
        "instance_uid": ds.SOPInstanceUID,
    }


def test_generated_mammogram_arrives_in_orthanc_by_stow_rs_and_reads_back_equal(pacs_service, tmp_path):
    body = {"model": "mambo", "height": 96, "width": 64, "steps": 2, "seed": 3, "view": "MLO"}
    r = pacs_service.post("/generate", json={**body, "formats": ["png16", "dicom-mg", "dicom"], "deliver": ["orthanc"]})
    assert r.status_code == 202, r.text
    info = _finish(pacs_service, r.headers["Location"])
    files = _download_all(pacs_service, info)
    delivery = _delivery_done(pacs_service, info)
    assert delivery["status"] == "delivered" and delivery["destinations"] == ["orthanc"]
    assert sorted(i["file"] for i in delivery["instances"]) == ["image00.dcm", "image00_mg.dcm"]
    assert all(i["status"] == "delivered" and i["attempts"] == 1 for i in delivery["instances"])
    stored = _arrived_equal(pacs_service, files, ["image00_mg.dcm", "image00.dcm"])
    mg = stored["image00_mg.dcm"]
    assert mg.SOPClassUID.name.startswith("Digital Mammography") and mg.ViewPosition == "MLO"
    assert "SYNTHETIC" in mg.SeriesDescription and mg.SyntheticData == "YES"
    assert dciodvfy_bytes(files["image00_mg.dcm"], tmp_path) == []


def test_dualview_pair_arrives_by_c_store_as_one_mammography_study(pacs_service, tmp_path):
    r = pacs_service.post(
        "/generate",
        json={"model": "dualview", "steps": 2, "seed": 1, "formats": ["dicom-mg"], "deliver": ["orthanc-dimse"]},
    )
    info = _finish(pacs_service, r.headers["Location"])
    files = _download_all(pacs_service, info)
    assert _delivery_done(pacs_service, info)["status"] == "delivered"
    stored = _arrived_equal(pacs_service, files, ["pair00_cc_mg.dcm", "pair00_mlo_mg.dcm"])
    cc, mlo = stored["pair00_cc_mg.dcm"], stored["pair00_mlo_mg.dcm"]
    assert cc.StudyInstanceUID == mlo.StudyInstanceUID and (cc.ViewPosition, mlo.ViewPosition) == ("CC", "MLO")
    for name in files:
        assert dciodvfy_bytes(files[name], tmp_path) == []


def test_anomaly_map_takes_its_input_from_orthanc_and_sends_back_seg_and_heat_map(pacs_service, tmp_path):
    source = _input_in_orthanc(pacs_service, tmp_path)
    form = {"steps": "3", "repeats": "1", "seed": "0", "formats": ["dicom", "dicom-seg"], "deliver": ["orthanc-dimse"]}
    r = pacs_service.post("/anomaly-map", data={**form, **_by_uids(source)})
    assert r.status_code == 202, r.text
    info = _finish(pacs_service, r.headers["Location"])
    files = _download_all(pacs_service, info)
    assert info["summary"]["input"] == {"format": "dicom", "height": 96, "width": 96}
    assert _delivery_done(pacs_service, info)["status"] == "delivered"
    stored = _arrived_equal(pacs_service, files, ["mask_seg.dcm", "heatmap.dcm"])
    for name in ("mask_seg.dcm", "heatmap.dcm"):
        assert stored[name].StudyInstanceUID == source.StudyInstanceUID  # joins the input's study in the PACS
        assert dciodvfy_bytes(files[name], tmp_path) == []
    seg_file = tmp_path / "seg_from_orthanc.dcm"
    seg_file.write_bytes(pacs_service.orthanc.instance_file(stored["mask_seg.dcm"].SOPInstanceUID))
    mask, label, referenced = read_segmentation(seg_file)
    local_mask, _, _ = read_segmentation(_write(tmp_path / "seg_local.dcm", files["mask_seg.dcm"]))
    assert referenced == source.SOPInstanceUID and label == "anomaly" and mask.shape == (96, 96)
    np.testing.assert_array_equal(mask, local_mask)
    heat = stored["heatmap.dcm"]
    real = heat.pixel_array * float(heat.RescaleSlope) + float(heat.RescaleIntercept)
    assert real.max() == pytest.approx(info["summary"]["heat_peak"], rel=1e-3)  # the raw residual scale


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_super_resolution_of_an_orthanc_instance_returns_a_derived_mammogram(pacs_service, tmp_path):
    source = _input_in_orthanc(pacs_service, tmp_path)
    form = {"scale": "2", "steps": "2", "seed": "1", "formats": ["dicom-mg"], "deliver": ["orthanc"]}
    info = _finish(
        pacs_service, pacs_service.post("/super-resolve", data={**form, **_by_uids(source)}).headers["Location"]
    )
    files = _download_all(pacs_service, info)
    assert _delivery_done(pacs_service, info)["status"] == "delivered"
    out = _arrived_equal(pacs_service, files, ["superres_mg.dcm"])["superres_mg.dcm"]
    assert (out.Rows, out.Columns) == (192, 192) and out.StudyInstanceUID == source.StudyInstanceUID
    assert float(out.ImagerPixelSpacing[0]) == pytest.approx(float(source.PixelSpacing[0]) / 2)
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert dciodvfy_bytes(files["superres_mg.dcm"], tmp_path) == []


def test_pacs_down_job_succeeds_delivery_retried_then_failed_and_files_intact(pacs_service):
    body = {"model": "dualview", "steps": 2, "seed": 2, "formats": ["png16", "dicom"], "deliver": ["down"]}
    info = _finish(pacs_service, pacs_service.post("/generate", json=body).headers["Location"])
    delivery = _delivery_done(pacs_service, info)
    assert delivery["status"] == "failed" and delivery["attempts"] == delivery["max_attempts"] == 2
    assert all(i["status"] == "failed" and i["attempts"] == 2 and i["error"] for i in delivery["instances"])
    files = _download_all(pacs_service, info)  # every file still matches its size and sha256
    assert {"pair00_cc.dcm", "pair00_mlo.dcm", "pair00_cc.png"} <= set(files)


_UIDS = {"study_uid": "1.2", "series_uid": "1.3", "instance_uid": "1.4"}


@pytest.mark.parametrize(
    ("path", "form", "fragment"),
    [
        (
            "/anomaly-map",
            {"pacs": "nowhere", "study_uid": "1.2", "series_uid": "1.3", "instance_uid": "1.4"},
            "nowhere",
        ),
        ("/anomaly-map", {"pacs": "orthanc", "study_uid": "1.2"}, "together"),
        (
            "/anomaly-map",
            {"pacs": "orthanc", "study_uid": "1.2", "series_uid": "1.3", "instance_uid": "1/4"},
            "instance_uid",
        ),
        ("/anomaly-map", {"formats": ["dicom"], "deliver": ["elsewhere"]}, "elsewhere"),
        ("/anomaly-map", {"formats": ["png16"], "deliver": ["orthanc"]}, "deliver sends DICOM"),
        ("/anomaly-map", {"formats": ["dicom-mg"]}, "dicom-mg"),
        ("/super-resolve", {"formats": ["dicom-seg"]}, "dicom-seg"),
        ("/super-resolve", {}, "no input"),
    ],
)
def test_bad_pacs_requests_are_refused_before_queueing(pacs_service, path, form, fragment):
    r = pacs_service.post(path, data=form)
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_unreachable_input_server_answers_502_and_a_missing_instance_422(pacs_service):
    uids = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "instance_uid": "1.2.3.4.5"}
    r = pacs_service.post("/anomaly-map", data={"pacs": "down", **uids})
    assert r.status_code == 502 and r.json()["error"] == "upstream_error"
    r = pacs_service.post("/anomaly-map", data={"pacs": "orthanc", **uids})
    assert r.status_code == 422 and "has no instance" in r.json()["detail"]


def test_seg_of_a_png_input_and_mg_of_a_mambo_image_without_view_are_refused(pacs_service):
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint16)).save(png, format="PNG")
    r = pacs_service.post(
        "/anomaly-map", files={"file": ("a.png", png.getvalue(), "image/png")}, data={"formats": ["dicom-seg"]}
    )
    assert r.status_code == 422 and "needs a DICOM input" in r.json()["detail"]
    r = pacs_service.post("/generate", json={"model": "mambo", "formats": ["dicom-mg"]})
    assert r.status_code == 422 and "view" in r.text
