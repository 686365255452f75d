"""PACS in and out against a real Orthanc: STOW-RS and C-STORE, WADO-RS under the upload limits,
and the delivery outbox (retry with backoff, files untouched) on the real Redis."""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np
import pydicom
import pytest

from models.errors import BadInputError, PayloadTooLargeError, UpstreamError
from models.imaging.dicom_seg import ABNORMAL, SegmentInfo, read_segmentation, write_segmentation
from models.imaging.dicom_write import generate_uid, write_mg_phantom_dicom, write_synthetic_mg
from tests.pacs_support import Orthanc
from tests.service_support import free_port
from workers.delivery import (
    DeliveryLoop,
    DeliveryPolicy,
    attempt_delivery,
    claim_due,
    delivery_key,
    outbox_key,
    read_delivery,
    schedule_results,
)
from workers.pacs import DicomNode, DicomWebServer, InstanceRef, retrieve_dicomweb, store_instance
from workers.store import ResultStore

pytestmark = pytest.mark.integration

LIMITS = {"max_bytes": 64 << 20, "max_pixels": 8192 * 8192, "max_side": 8192}


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((64, 48)).astype(np.float32)


def _mg(tmp_path, name: str = "mg.dcm") -> bytes:
    return write_synthetic_mg(
        tmp_path / name, _image(), model_name="m", model_version="1", laterality="R", view="MLO", seed=1
    ).read_bytes()


def _web(server: Orthanc, **kw) -> DicomWebServer:
    return DicomWebServer(url=server.dicomweb_url, timeout_s=10, **kw)


def _node(server: Orthanc) -> DicomNode:
    return DicomNode(kind="dimse", host="127.0.0.1", port=server.dicom_port, ae_title=server.aet, timeout_s=10)


def _same_object(sent: bytes, stored: bytes | None) -> None:
    assert stored is not None, "the PACS does not have the instance"
    a, b = pydicom.dcmread(io.BytesIO(sent)), pydicom.dcmread(io.BytesIO(stored))
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SyntheticData"):
        assert a.get(keyword) == b.get(keyword), keyword
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)


@pytest.mark.parametrize("protocol", ["stow-rs", "c-store"])
def test_mammogram_and_segmentation_arrive_and_read_back_equal(tmp_path, orthanc, protocol):
    server = _web(orthanc) if protocol == "stow-rs" else _node(orthanc)
    mg_bytes = _mg(tmp_path)
    source = pydicom.dcmread(io.BytesIO(mg_bytes))
    mask = np.zeros((64, 48), bool)
    mask[10:30, 5:20] = True
    seg_path = write_segmentation(tmp_path / "seg.dcm", mask, source, SegmentInfo("anomaly", ABNORMAL, "m", "1"))
    for data in (mg_bytes, seg_path.read_bytes()):
        store_instance("test", server, data)
    _same_object(mg_bytes, orthanc.instance_file(source.SOPInstanceUID))
    seg_uid = pydicom.dcmread(seg_path, stop_before_pixels=True).SOPInstanceUID
    stored_seg = tmp_path / "back.dcm"
    stored_seg.write_bytes(orthanc.instance_file(seg_uid))
    back, label, referenced = read_segmentation(stored_seg)
    np.testing.assert_array_equal(back, mask)
    assert (label, referenced) == ("anomaly", source.SOPInstanceUID)


def test_sending_to_a_pacs_that_is_down_raises_an_upstream_error(tmp_path):
    closed = free_port()
    with pytest.raises(UpstreamError, match="down"):
        store_instance("down", DicomWebServer(url=f"http://127.0.0.1:{closed}/dicom-web", timeout_s=2), _mg(tmp_path))
    node = DicomNode(kind="dimse", host="127.0.0.1", port=closed, ae_title="NOBODY", timeout_s=2)
    with pytest.raises(UpstreamError, match="down"):
        store_instance("down", node, _mg(tmp_path))


def test_wado_rs_input_comes_back_as_the_stored_file_under_the_upload_limits(tmp_path, orthanc):
    data = write_mg_phantom_dicom(
        tmp_path / "in.dcm",
        _image(3),
        laterality="L",
        view="CC",
        patient_id="PHW",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
    ).read_bytes()
    orthanc.upload(data)
    ds = pydicom.dcmread(io.BytesIO(data))
    ref = InstanceRef("orthanc", ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    got = retrieve_dicomweb(_web(orthanc), ref, **LIMITS)
    _same_object(data, got)
    with pytest.raises(PayloadTooLargeError, match="pixels"):  # refused from the metadata, before the body
        retrieve_dicomweb(_web(orthanc), ref, **{**LIMITS, "max_pixels": 1000})
    with pytest.raises(PayloadTooLargeError, match="upload limit"):  # the body is counted while it streams
        retrieve_dicomweb(_web(orthanc), ref, **{**LIMITS, "max_bytes": 2000})
    missing = InstanceRef("orthanc", ds.StudyInstanceUID, ds.SeriesInstanceUID, generate_uid())
    with pytest.raises(BadInputError, match="has no instance"):
        retrieve_dicomweb(_web(orthanc), missing, **LIMITS)
    with pytest.raises(BadInputError, match="DICOM UID"):
        InstanceRef("orthanc", "1.2", "1.2/../../studies", "1.3")


@pytest.fixture
def outbox(redis_conn):
    queue = f"mgtest-outbox-{uuid.uuid4().hex[:8]}"
    jobs: list[str] = []
    yield queue, jobs
    redis_conn.delete(outbox_key(queue), *[delivery_key(j) for j in jobs] or ["-"])


def _job_with_results(tmp_path, jobs: list[str]) -> tuple[ResultStore, str, list]:
    store = ResultStore(tmp_path / "results")
    job_id = uuid.uuid4().hex
    jobs.append(job_id)
    files = [store.write_bytes(job_id, "image00_mg.dcm", _mg(tmp_path)), store.write_bytes(job_id, "x.png", b"png")]
    return store, job_id, files


def test_failed_delivery_is_retried_with_backoff_then_reported_and_files_stay(tmp_path, redis_conn, outbox):
    queue, jobs = outbox
    store, job_id, files = _job_with_results(tmp_path, jobs)
    before = hashlib.sha256(store.path_of(job_id, "image00_mg.dcm").read_bytes()).hexdigest()
    policy = DeliveryPolicy(attempts=3, backoff_s=60, backoff_max_s=600)
    servers = {"down": DicomWebServer(url=f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=2)}
    record = schedule_results(redis_conn, queue, job_id, store, files, ["down"], ttl_s=600, policy=policy)
    assert [i["file"] for i in record["instances"]] == ["image00_mg.dcm"]  # only DICOM goes to a PACS
    assert claim_due(redis_conn, queue, lease_s=30) == job_id
    assert claim_due(redis_conn, queue, lease_s=30) is None  # leased: nobody else takes it meanwhile
    first = attempt_delivery(redis_conn, queue, job_id, store, servers, policy)
    assert first["status"] == "retrying" and first["instances"][0]["attempts"] == 1
    assert "down" in first["instances"][0]["error"]
    due = redis_conn.zscore(outbox_key(queue), job_id)
    assert 55 < due - first["updated_at"] < 65  # the first backoff
    attempt_delivery(redis_conn, queue, job_id, store, servers, policy)
    assert redis_conn.zscore(outbox_key(queue), job_id) - read_delivery(redis_conn, job_id)["updated_at"] > 115
    final = attempt_delivery(redis_conn, queue, job_id, store, servers, policy)
    assert final["status"] == "failed" and final["attempts"] == 3 and final["instances"][0]["status"] == "failed"
    assert redis_conn.zscore(outbox_key(queue), job_id) is None  # no more attempts
    assert hashlib.sha256(store.path_of(job_id, "image00_mg.dcm").read_bytes()).hexdigest() == before


def test_delivery_loop_delivers_once_the_pacs_is_back(tmp_path, redis_conn, outbox, orthanc):
    queue, jobs = outbox
    store, job_id, files = _job_with_results(tmp_path, jobs)
    policy = DeliveryPolicy(attempts=5, backoff_s=0.2, backoff_max_s=0.2)
    servers = {"pacs": DicomWebServer(url=f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=2)}
    schedule_results(redis_conn, queue, job_id, store, files, ["pacs"], ttl_s=600, policy=policy)
    loop = DeliveryLoop(redis_conn, [queue], store, servers, policy, poll_s=0.05)
    assert loop.run_once() == 1 and read_delivery(redis_conn, job_id)["status"] == "retrying"
    servers["pacs"] = _web(orthanc)  # the PACS is reachable again
    import time

    time.sleep(0.3)
    assert loop.run_once() == 1
    record = read_delivery(redis_conn, job_id)
    assert record["status"] == "delivered" and record["attempts"] == 2
    assert record["instances"][0]["delivered_at"] is not None
    sop = record["instances"][0]["sop_instance_uid"]
    _same_object(store.path_of(job_id, "image00_mg.dcm").read_bytes(), orthanc.instance_file(sop))
