"""Lesions on demand through the service: POST /insert-lesion and POST /generate with lesions, over HTTP, the
real Redis and a real burst worker (`MammogenWorker`, in process) on a tiny random bundle with a lesion network.

Checked: the result files and their bytes (the same the CLI writes), bit-identical pixels outside the edit
regions of the returned 16-bit PNG, refusals before queueing (4xx naming the problem), and a lesion outside
the breast failing its job with that message while the worker goes on serving."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from rq import Queue

from app.cli.main import main
from app.main import create_app
from models.bundle import create_random_bundle
from models.imaging.dicom_seg import read_segments
from models.imaging.files import write_png16
from models.lesion_spec import LesionSpec
from tests.dicom_validation import dciodvfy_bytes, dciodvfy_report
from tests.imaging_support import phantom_dicom
from tests.service_support import black_png, purge_queue, settings_for, unique_queue
from training.phantoms import make_phantom_case
from workers.queueing import SERIALIZER
from workers.runtime import WorkerRuntime
from workers.store import ResultStore
from workers.worker import MammogenWorker

pytestmark = pytest.mark.integration

MASS = {"kind": "mass", "center": [128, 150], "diameter_px": 14}  # inside the right breast of the phantom
CALC = {"kind": "calcifications", "center": [90, 160], "diameter_px": 8}
FAST = {"steps": "2", "seed": "3"}
DUAL_LESION = {"kind": "mass", "center": [4, 2], "diameter_px": 3}


@pytest.fixture(scope="module")
def lesion_bundle(tmp_path_factory) -> Path:
    return create_random_bundle(
        tmp_path_factory.mktemp("b") / "lesion-mambo", preset="tiny", lesion_network=True, conditioning="aligned"
    )


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return make_phantom_case(4242, (256, 192), laterality="R").cc.image


@pytest.fixture
def service(tmp_path, redis_conn, lesion_bundle) -> Iterator[tuple[TestClient, object, Queue]]:
    """(HTTP client, run-the-queue function, the normal queue) of one service on the lesion bundle."""
    name = unique_queue("lesion")
    settings = settings_for(tmp_path, name, mambo_bundle=lesion_bundle)
    store = ResultStore(settings.result_dir)
    queue = Queue(name, connection=redis_conn, serializer=SERIALIZER)

    def run_queue() -> None:
        runtime = WorkerRuntime(store, {"mambo": lesion_bundle}, device="cpu")
        MammogenWorker([queue], connection=redis_conn, runtime=runtime, heartbeat_s=1).work(burst=True)

    try:
        with TestClient(create_app(settings)) as client:
            yield client, run_queue, queue
    finally:
        purge_queue(redis_conn, name)


def _post(client: TestClient, data: bytes, lesions: object, name: str = "in.png", **form: object):
    text = lesions if isinstance(lesions, str) else json.dumps(lesions)
    ctype = "application/dicom" if name.endswith(".dcm") else "image/png"
    return client.post("/insert-lesion", files={"file": (name, data, ctype)}, data={**FAST, "lesions": text, **form})


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _files(client: TestClient, info: dict) -> dict[str, bytes]:
    return {link["name"]: client.get(link["url"]).content for link in info["results"]}


def _u16(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_insert_lesion_end_to_end_png(service, phantom):
    client, run_queue, _ = service
    data = _png_bytes(phantom)
    r = _post(client, data, [MASS, CALC])
    assert r.status_code == 202, r.text
    run_queue()
    info = client.get(r.headers["Location"]).json()
    assert info["status"] == "succeeded", info
    assert info["kind"] == "insert-lesion"
    files = _files(client, info)
    assert set(files) == {"edited.png", "mask-01.png", "mask-02.png", "mask-union.png", "lesions.json"}
    before, after = _u16(data), _u16(files["edited.png"])
    assert after.dtype == np.uint16 and after.shape == (256, 192)
    specs = [LesionSpec.from_dict(MASS), LesionSpec.from_dict(CALC)]
    edit = specs[0].edit_region(before.shape) | specs[1].edit_region(before.shape)
    assert np.array_equal(after[~edit], before[~edit]), "a pixel outside the edit regions changed"
    assert not np.array_equal(after[edit], before[edit])
    for n, spec in enumerate(specs, 1):
        mask = _u16(files[f"mask-0{n}.png"])
        assert mask.dtype == np.uint8 and np.array_equal(mask == 255, spec.lesion_mask(before.shape))
    report = json.loads(files["lesions.json"])
    assert [r["kind"] for r in report["lesions"]] == ["mass", "calcifications"]
    assert report["bundle"]["name"] == "random-mambo-tiny" and report["input"]["format"] == "png"
    assert sorted(report["files"]) == sorted(files)
    summary = info["summary"]
    assert summary["lesions"] == report["lesions"] and summary["options"]["seeds"] == [3]
    assert summary["acceleration"]["setting"] == "auto"


def test_insert_lesion_into_a_dicom_gives_a_derived_mammogram_and_its_seg(service, phantom, tmp_path):
    client, run_queue, _ = service
    src = phantom_dicom(tmp_path / "in.dcm", phantom, laterality="R", view="CC", patient_id="LES2")
    r = _post(client, src.read_bytes(), [MASS], name="in.dcm")
    assert r.status_code == 202, r.text
    run_queue()
    info = client.get(r.headers["Location"]).json()
    assert info["status"] == "succeeded", info
    files = _files(client, info)
    assert {"edited.png", "edited_mg.dcm", "lesions_seg.dcm", "mask-01.png", "lesions.json"} <= set(files)
    edited = pydicom.dcmread(io.BytesIO(files["edited_mg.dcm"]))
    source = pydicom.dcmread(src)
    assert edited.StudyInstanceUID == source.StudyInstanceUID and edited.PatientID == "LES2"
    assert edited.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    (tmp_path / "seg.dcm").write_bytes(files["lesions_seg.dcm"])
    masks, labels, referenced = read_segments(tmp_path / "seg.dcm")
    assert referenced == edited.SOPInstanceUID and labels == ["lesion 1: mass"]
    assert np.array_equal(masks[0], _u16(files["mask-01.png"]) == 255)
    assert dciodvfy_bytes(files["edited_mg.dcm"], tmp_path, "mg.dcm") == []
    assert dciodvfy_bytes(files["lesions_seg.dcm"], tmp_path, "seg2.dcm") == []


@pytest.mark.parametrize(
    ("lesions", "form", "status", "message"),
    [
        ("[]", {}, 422, "give at least one lesion"),
        ('[{"kind": "mass", ', {}, 422, "lesions is not valid JSON"),
        ({"kind": "mass"}, {}, 422, "lesions must be a JSON list"),
        ([{**MASS, "diameter_px": -5}], {}, 422, "lesion diameter must be a positive number"),
        ([{**MASS, "shape": "round"}], {}, 422, "unknown lesion field(s): shape"),
        ([{"kind": "mass", "center": [1, 2]}], {}, 422, "a lesion needs diameter_px"),
        ([MASS], {"colour": "red"}, 422, "unknown form field(s): colour"),
        ([MASS], {"guidance_scale": "-1"}, 422, "guidance_scale"),
        ([{**MASS, "kind": "cyst"}], {}, 422, "unknown kind 'cyst'; this bundle inserts mass, spiculated_mass"),
        ([{**MASS, "center": [128, 400]}], {}, 422, "is off the 256x192 image"),
        ([MASS], {"formats": ["png16", "dicom-seg"]}, 422, "add dicom or dicom-mg to formats"),
        ([MASS], {"formats": "dicom"}, 422, "formats must include png16"),
        ([MASS], {"formats": ["png16", "dicom"]}, 422, "it needs a DICOM input, not png"),
    ],
)
def test_bad_requests_are_refused_before_queueing(service, phantom, lesions, form, status, message):
    client, _, queue = service
    r = _post(client, _png_bytes(phantom), lesions, **form)
    assert r.status_code == status and message in r.text, r.text
    assert queue.count == 0


def test_a_request_without_lesions_names_the_missing_field(service, phantom):
    client, _, queue = service
    r = client.post("/insert-lesion", files={"file": ("in.png", _png_bytes(phantom), "image/png")}, data=FAST)
    assert r.status_code == 422 and "lesions" in str(r.json()["detail"][0]["loc"])
    assert queue.count == 0


def test_a_lesion_outside_the_breast_fails_its_job_and_the_worker_goes_on(service, phantom):
    client, run_queue, _ = service
    data = _png_bytes(phantom)
    outside = _post(client, data, [{"kind": "mass", "center": [12, 100], "diameter_px": 8}])
    too_large = _post(client, data, [{"kind": "mass", "center": [128, 140], "diameter_px": 60}])
    good = _post(client, data, [MASS])
    assert outside.status_code == too_large.status_code == good.status_code == 202
    run_queue()  # one worker takes all three in turn
    failed = client.get(outside.headers["Location"]).json()
    assert failed["status"] == "failed", failed
    assert failed["error"]["error"] == "bad_input" and failed["error"]["http_status"] == 422
    assert "lies outside the breast" in failed["error"]["detail"]
    big = client.get(too_large.headers["Location"]).json()
    assert big["status"] == "failed" and "this bundle edits at most" in big["error"]["detail"]
    assert failed["retries_left"] == big["retries_left"]  # bad input is not retried
    assert client.get(good.headers["Location"]).json()["status"] == "succeeded"


def test_insert_lesion_gives_the_cli_files_byte_for_byte(service, lesion_bundle, phantom, tmp_path):
    client, run_queue, _ = service
    src = write_png16(tmp_path / "in.png", phantom)
    r = _post(client, src.read_bytes(), [MASS, CALC], guidance_scale="1.5")
    assert r.status_code == 202, r.text
    run_queue()
    info = client.get(r.headers["Location"]).json()
    assert info["status"] == "succeeded", info
    argv = ["insert-lesion", str(src), "--lesion", "mass:128,150,14", "--lesion", "calcifications:90,160,8"]
    argv += ["--steps", "2", "--seed", "3", "--guidance-scale", "1.5", "--bundle", str(lesion_bundle)]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    served = _files(client, info)
    for name in ("edited.png", "mask-01.png", "mask-02.png", "mask-union.png"):
        assert served[name] == (tmp_path / "cli" / name).read_bytes(), name
    cli_report = json.loads((tmp_path / "cli" / "lesions.json").read_text())
    assert json.loads(served["lesions.json"])["lesions"] == cli_report["lesions"]


def test_generate_with_lesions_returns_masks_and_the_healthy_twin(service, lesion_bundle, tmp_path):
    from models.lesion_insertion import LesionInserter
    from models.lesion_outputs import generated_info

    client, run_queue, _ = service
    body = {"model": "mambo", "height": 96, "width": 96, "steps": 2, "seed": 11, "laterality": "L"}
    plain = client.post("/generate", json=body)
    assert plain.status_code == 202, plain.text
    run_queue()
    image = _u16(_files(client, client.get(plain.headers["Location"]).json())["image00.png"]) / 65535.0
    # a place in this (random-weight) image's breast: the inserter's own check decides
    inserter = LesionInserter.from_bundle(lesion_bundle)
    spot = None
    for row in range(20, 76, 4):
        for col in range(10, 40, 4):
            try:
                inserter.check(image, [LesionSpec("mass", (row, col), 6)], generated_info("L", "left"))
            except Exception:
                continue
            spot = (row, col)
            break
        if spot:
            break
    assert spot is not None, "no place in the generated breast for a 6 px lesion"
    lesion = {"kind": "mass", "center": list(spot), "diameter_px": 6}
    dicom = {"formats": ["png16", "dicom", "dicom-mg"], "view": "CC"}
    r = client.post("/generate", json={**body, **dicom, "lesions": [lesion], "guidance_scale": 2.0})
    assert r.status_code == 202, r.text
    run_queue()
    info = client.get(r.headers["Location"]).json()
    assert info["status"] == "succeeded", info
    files = _files(client, info)
    assert {"image00.png", "image00_healthy.png", "image00_mask-01.png", "image00_mask-union.png"} <= set(files)
    # DICOM output: the masks as a SEG referencing the image's Digital Mammography object, valid per dciodvfy
    mg = pydicom.dcmread(io.BytesIO(files["image00_mg.dcm"]))
    (tmp_path / "gen_seg.dcm").write_bytes(files["image00_lesions_seg.dcm"])
    seg_masks, labels, referenced = read_segments(tmp_path / "gen_seg.dcm")
    assert referenced == mg.SOPInstanceUID and labels == ["lesion 1: mass"]
    assert np.array_equal(seg_masks[0], _u16(files["image00_mask-01.png"]) == 255)
    assert "image00_lesions_seg.dcm" in json.loads(files["image00_lesions.json"])["files"]
    for name in ("image00.dcm", "image00_mg.dcm", "image00_lesions_seg.dcm"):
        assert dciodvfy_bytes(files[name], tmp_path, name) == [], name
    healthy, edited = _u16(files["image00_healthy.png"]), _u16(files["image00.png"])
    assert np.array_equal(healthy / 65535.0, image)  # the same generation, then the lesion
    spec = LesionSpec.from_dict(lesion)
    outside = ~spec.edit_region(healthy.shape)
    assert np.array_equal(edited[outside], healthy[outside]) and not np.array_equal(edited, healthy)
    assert np.array_equal(_u16(files["image00_mask-01.png"]) == 255, spec.lesion_mask(healthy.shape))
    report = json.loads(files["image00_lesions.json"])
    assert report["image"] == "image00" and report["lesions"][0]["center"] == [float(spot[0]), float(spot[1])]
    assert info["summary"]["lesions"][0][0]["kind"] == "mass" and info["summary"]["options"]["guidance_scale"] == 2.0
    # `mammogen generate --lesion` makes the same files
    argv = ["generate", "--bundle", str(lesion_bundle), "--height", "96", "--width", "96", "--seed", "11"]
    argv += ["--steps", "2", "--chest-wall", "left", "--lesion", f"mass:{spot[0]},{spot[1]},6", "--guidance-scale", "2"]
    assert main([*argv, "--format", "png,dicom", "--out", str(tmp_path / "cli")]) == 0
    for served, made in (("image00", "mambo_seed11"), ("image00_healthy", "mambo_seed11_healthy")):
        assert files[f"{served}.png"] == (tmp_path / "cli" / f"{made}.png").read_bytes(), served
    for name in ("mask-01.png", "mask-union.png"):
        assert files[f"image00_{name}"] == (tmp_path / "cli" / f"mambo_seed11_{name}").read_bytes()
    # the CLI's SEG references its Secondary Capture (no MG asked), on the same masks
    sc = pydicom.dcmread(tmp_path / "cli" / "mambo_seed11.dcm")
    seg_masks, _, referenced = read_segments(tmp_path / "cli" / "mambo_seed11_lesions_seg.dcm")
    assert referenced == sc.SOPInstanceUID and np.array_equal(seg_masks[0], spec.lesion_mask(healthy.shape))
    assert dciodvfy_report(tmp_path / "cli" / "mambo_seed11_lesions_seg.dcm") == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"class": "mass"}, "is not class-conditional: leave class unset"),
        ({"lesions": [{"kind": "cyst", "center": [40, 20], "diameter_px": 6}]}, "unknown kind 'cyst'"),
        ({"lesions": [{"kind": "mass", "center": [40, 200], "diameter_px": 6}]}, "is off the 96x96 image"),
        ({"lesions": [{"kind": "mass", "center": [40, 20], "diameter_px": 0}]}, "must be a positive number"),
        ({"lesions": [{"kind": "mass", "centre": [40, 20], "diameter_px": 6}]}, "centre"),
        ({"model": "dualview", "height": None, "width": None, "lesions": [DUAL_LESION]}, "not dual-view"),
        ({"guidance_scale": 50}, "guidance_scale"),
    ],
)
def test_bad_class_or_lesions_in_generate_are_422(service, extra, message):
    client, _, queue = service
    r = client.post("/generate", json={"model": "mambo", "height": 96, "width": 96, "steps": 2, **extra})
    assert r.status_code == 422 and message in r.text, r.text
    assert queue.count == 0


def test_the_python_client_inserts_and_downloads_verified_files(service, phantom, tmp_path):
    from app.client import MammogenClient
    from tests.service_support import live_server

    client, run_queue, _ = service
    with live_server(client.app) as url, MammogenClient(url) as mg:
        roi = tmp_path / "calc.png"
        roi.write_bytes(_mask_png(_blob(*CALC_ROI)))
        lesions = [MASS, {"kind": "calcifications", "mask": 0}]
        job = mg.insert_lesion(_png_bytes(phantom), lesions, masks=[roi], steps=2, seed=1)
        run_queue()
        record = mg.wait(job, progress=False)
        assert record["status"] == "succeeded", record
        paths = mg.download(record, tmp_path / "got")  # each file checked against its size and sha256
    assert {p.name for p in paths} == {"edited.png", "mask-01.png", "mask-02.png", "mask-union.png", "lesions.json"}
    assert np.array_equal(_u16((tmp_path / "got" / "mask-02.png").read_bytes()), _u16(roi.read_bytes()))


# -- lesions given by an uploaded mask ------------------------------------------------------------


def _blob(shape: tuple[int, int], center: tuple[int, int], radii: tuple[float, float], spur: int) -> np.ndarray:
    """An irregular label: an ellipse with a spur to one side (no disc the service could draw itself)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    r, c = center
    m = ((yy - r) / radii[0]) ** 2 + ((xx - c) / radii[1]) ** 2 <= 1.0
    m[r - 1 : r + 1, c : c + spur] = True
    return m


def _mask_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _post_masks(
    client: TestClient,
    data: bytes,
    lesions: object,
    masks: list[bytes],
    name: str = "in.png",
    headers: dict[str, str] | None = None,
):
    """POST /insert-lesion with the image as ``file`` and each mask as a ``masks`` part, in order."""
    ctype = "application/dicom" if name.endswith(".dcm") else "image/png"
    files = [("file", (name, data, ctype))] + [("masks", (f"m{i}.png", m, "image/png")) for i, m in enumerate(masks)]
    return client.post("/insert-lesion", files=files, data={**FAST, "lesions": json.dumps(lesions)}, headers=headers)


MASS_ROI = ((256, 192), (128, 150), (6.0, 4.0), 6)  # inside the right breast of the phantom
CALC_ROI = ((256, 192), (90, 160), (3.0, 2.0), 3)


def test_a_lesion_given_as_a_mask_comes_back_bit_for_bit(service, lesion_bundle, phantom, tmp_path, redis_conn):
    client, run_queue, queue = service
    data = _png_bytes(phantom)
    mass, calc = _blob(*MASS_ROI), _blob(*CALC_ROI)
    parts = [_mask_png(calc), _mask_png(mass)]  # sent in the other order: lesion 1 names part 1
    lesions = [{"kind": "mass", "mask": 1}, {"kind": "calcifications", "mask": 0}]
    r = _post_masks(client, data, lesions, parts)
    assert r.status_code == 202, r.text
    # on the queue: references to files in the upload store, never the pixels
    (queued,) = queue.get_jobs()
    payload = queued.kwargs["job"]
    assert payload["request"]["lesions"] == lesions
    assert [m["name"] for m in payload["masks"]] == ["mask-00.png", "mask-01.png"]
    assert len(json.dumps(payload)) < 4096
    uploads = tmp_path / "results" / "uploads" / queued.id
    assert (uploads / "mask-01.png").read_bytes() == parts[1]
    run_queue()
    info = client.get(r.headers["Location"]).json()
    assert info["status"] == "succeeded", info
    assert not uploads.exists()  # the input and its masks go once the job has run
    files = _files(client, info)
    assert set(files) == {"edited.png", "mask-01.png", "mask-02.png", "mask-union.png", "lesions.json"}
    for n, sent in ((1, parts[1]), (2, parts[0])):
        assert np.array_equal(_u16(files[f"mask-0{n}.png"]), _u16(sent)), f"mask {n} differs from the upload"
    before, after = _u16(data), _u16(files["edited.png"])
    specs = [LesionSpec("mass", mask=mass), LesionSpec("calcifications", mask=calc)]
    edit = specs[0].edit_region(before.shape) | specs[1].edit_region(before.shape)
    assert np.array_equal(after[~edit], before[~edit]) and not np.array_equal(after[edit], before[edit])
    records = json.loads(files["lesions.json"])["lesions"]
    assert records[0]["mask_pixels"] == int(mass.sum()) and records[1]["kind"] == "calcifications"
    # the CLI's --lesion-mask makes the same files
    src = write_png16(tmp_path / "in.png", phantom)
    roi = [tmp_path / "mass.png", tmp_path / "calc.png"]
    roi[0].write_bytes(parts[1])
    roi[1].write_bytes(parts[0])
    argv = ["insert-lesion", str(src), "--lesion-mask", f"mass:{roi[0]}", "--lesion-mask", f"calcifications:{roi[1]}"]
    argv += ["--steps", "2", "--seed", "3", "--bundle", str(lesion_bundle)]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    for name in ("edited.png", "mask-01.png", "mask-02.png", "mask-union.png"):
        assert files[name] == (tmp_path / "c" / name).read_bytes(), name


def test_a_mask_lesion_into_a_dicom_comes_back_in_the_seg(service, phantom, tmp_path):
    client, run_queue, _ = service
    src = phantom_dicom(tmp_path / "in.dcm", phantom, laterality="R", view="CC", patient_id="LES3")
    mass = _blob(*MASS_ROI)
    r = _post_masks(client, src.read_bytes(), [{"kind": "mass", "mask": 0}, CALC], [_mask_png(mass)], name="in.dcm")
    assert r.status_code == 202, r.text
    run_queue()
    info = client.get(r.headers["Location"]).json()
    assert info["status"] == "succeeded", info
    files = _files(client, info)
    (tmp_path / "seg.dcm").write_bytes(files["lesions_seg.dcm"])
    masks, labels, _ = read_segments(tmp_path / "seg.dcm")
    assert labels == ["lesion 1: mass", "lesion 2: calcifications"]
    assert np.array_equal(masks[0], mass) and np.array_equal(_u16(files["mask-01.png"]) == 255, mass)
    assert dciodvfy_bytes(files["lesions_seg.dcm"], tmp_path, "seg3.dcm") == []


def _mask_of(shape: tuple[int, int]) -> bytes:
    return _mask_png(_blob((shape[0], shape[1]), (shape[0] // 2, shape[1] // 2), (3.0, 3.0), 0))


MASK0 = {"kind": "mass", "mask": 0}


@pytest.mark.parametrize(
    ("lesions", "masks", "status", "message"),
    [
        ([MASK0], [_mask_of((100, 80))], 422, "masks part 0 is 100x80, the image 256x192"),
        ([MASK0], [_mask_png(np.zeros((256, 192), bool))], 422, "masks part 0: lesion mask has no lesion pixel"),
        ([MASK0], [b"not an image at all"], 415, "masks part 0:"),
        ([MASK0], [b""], 422, "masks part 0: the uploaded file is empty"),
        ([MASK0], [black_png(8000, 8000)], 413, "masks part 0:"),
        ([{"kind": "mass", "mask": 1}], [_mask_of((256, 192))], 422, "lesion 1: mask 1 names a masks part that was"),
        ([MASS], [_mask_of((256, 192))], 422, "masks part(s) 0 named by no lesion"),
        ([MASK0, MASK0], [_mask_of((256, 192))], 422, "masks part 0 is named by lesions 1 and 2"),
        ([MASK0], [], 422, "lesion 1: mask 0 names a masks part that was not sent (0 sent"),
        ([{**MASK0, "center": [1, 2]}], [_mask_of((256, 192))], 422, "give kind and mask only, not center"),
        ([{"kind": "mass", "mask": "0"}], [_mask_of((256, 192))], 422, "mask is the index of a masks part"),
        ([{"kind": "cyst", "mask": 0}], [_mask_of((256, 192))], 422, "lesion 1: unknown kind 'cyst'"),
        ([MASK0] * 17, [_mask_of((256, 192))] * 17, 422, "at most 16"),
    ],
)
def test_bad_masks_are_refused_before_queueing(service, phantom, lesions, masks, status, message):
    client, _, queue = service
    r = _post_masks(client, _png_bytes(phantom), lesions, masks)
    assert r.status_code == status and message in r.text, r.text
    assert queue.count == 0


def test_a_mask_outside_the_breast_fails_its_job_naming_it(service, phantom):
    client, run_queue, _ = service
    corner = _blob((256, 192), (12, 20), (4.0, 4.0), 0)
    r = _post_masks(client, _png_bytes(phantom), [MASK0], [_mask_png(corner)])
    assert r.status_code == 202, r.text
    run_queue()
    failed = client.get(r.headers["Location"]).json()
    assert failed["status"] == "failed" and failed["error"]["http_status"] == 422
    assert "lesion 1:" in failed["error"]["detail"] and "outside the breast" in failed["error"]["detail"]


def test_the_idempotency_key_tells_masks_apart(service, phantom):
    client, _, queue = service
    data, key = _png_bytes(phantom), {"Idempotency-Key": "mask-key-1"}
    first = _post_masks(client, data, [MASK0], [_mask_png(_blob(*MASS_ROI))], headers=key)
    again = _post_masks(client, data, [MASK0], [_mask_png(_blob(*MASS_ROI))], headers=key)
    other = _post_masks(client, data, [MASK0], [_mask_png(_blob(*CALC_ROI))], headers=key)
    assert first.status_code == 202 and again.status_code == 200, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 422 and "already used with different parameters" in other.text
    assert queue.count == 1
