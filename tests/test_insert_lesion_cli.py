"""`mammogen insert-lesion` on a tiny random-weight bundle with a lesion network: PNG and DICOM in, the edited
image, one label mask per lesion, their union, lesions.json and (DICOM input) the derived DICOM + SEG out."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from app.cli.main import main
from models.bundle import create_random_bundle
from models.imaging.dicom_seg import read_segments
from models.imaging.files import write_png8, write_png16
from models.lesion_spec import LesionSpec
from tests.dicom_validation import dciodvfy_report
from tests.imaging_support import phantom_dicom
from training.phantoms import make_phantom_case

MASS = "mass:128,150,14"  # inside the right breast of the phantom below (chest wall right)
CALC = "calcifications:90,160,8"


@pytest.fixture(scope="module")
def lesion_bundle(tmp_path_factory):
    return create_random_bundle(
        tmp_path_factory.mktemp("b") / "lesion-mambo", preset="tiny", lesion_network=True, conditioning="aligned"
    )


@pytest.fixture(scope="module")
def view():
    return make_phantom_case(4242, (256, 192), laterality="R").cc


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["insert-lesion", *argv, "--steps", "2"])
    out, err = capsys.readouterr()
    return rc, out, err


def _u16(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def test_png_input_gives_the_edited_png_bit_identical_outside_the_edit_regions(tmp_path, capsys, lesion_bundle, view):
    src = write_png16(tmp_path / "in.png", view.image)
    out = tmp_path / "out"
    rc, stdout, _ = _run(
        capsys, str(src), "--lesion", MASS, "--lesion", CALC, "--out", str(out), "--bundle", str(lesion_bundle)
    )
    assert rc == 0
    report = json.loads(stdout)
    assert json.loads((out / "lesions.json").read_text()) == report
    assert (
        sorted(p.name for p in out.iterdir())
        == sorted(report["files"])
        == sorted(["edited.png", "mask-01.png", "mask-02.png", "mask-union.png", "lesions.json"])
    )
    before, after = _u16(src), _u16(out / "edited.png")
    assert after.dtype == np.uint16 and after.shape == before.shape
    specs = [LesionSpec.parse(MASS), LesionSpec.parse(CALC)]
    edit = specs[0].edit_region(before.shape) | specs[1].edit_region(before.shape)
    assert np.array_equal(after[~edit], before[~edit]) and not np.array_equal(after, before)
    assert report["edited_pixels"] == int(edit.sum())
    # the masks: 8-bit label images, 255 = lesion, exactly what was asked; the union of both
    masks = [_u16(out / f"mask-0{n}.png") for n in (1, 2)]
    for mask, spec in zip(masks, specs, strict=True):
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        assert np.array_equal(mask == 255, spec.lesion_mask(before.shape))
    assert np.array_equal(_u16(out / "mask-union.png") == 255, (masks[0] == 255) | (masks[1] == 255))
    kinds = [(r["kind"], r["center"], r["diameter_px"]) for r in report["lesions"]]
    assert kinds == [("mass", [128.0, 150.0], 14.0), ("calcifications", [90.0, 160.0], 8.0)]
    assert report["lesions"][0]["mask_pixels"] == int(specs[0].lesion_mask(before.shape).sum())
    assert report["bundle"]["name"] == "random-mambo-tiny" and report["input"]["format"] == "png"
    assert report["stats"]["steps"] == 2 and report["stats"]["orientation"]["chest_wall"] == "right"


def test_dicom_input_also_gives_a_derived_mammogram_and_a_seg_referencing_it(tmp_path, capsys, lesion_bundle, view):
    src = phantom_dicom(tmp_path / "in.dcm", view.image, laterality="R", view="CC", patient_id="LES1")
    out = tmp_path / "out"
    rc, stdout, _ = _run(
        capsys, str(src), "--lesion", MASS, "--lesion", CALC, "--out", str(out), "--bundle", str(lesion_bundle)
    )
    assert rc == 0
    report = json.loads(stdout)
    assert {"edited.png", "edited_mg.dcm", "lesions_seg.dcm", "mask-01.png", "mask-02.png"} <= set(report["files"])
    source = pydicom.dcmread(src)
    edited = pydicom.dcmread(out / "edited_mg.dcm")
    assert edited.SOPClassUID == source.SOPClassUID  # Digital Mammography For Presentation
    assert (edited.StudyInstanceUID, edited.PatientID) == (source.StudyInstanceUID, "LES1")
    assert edited.SeriesInstanceUID != source.SeriesInstanceUID
    assert edited.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert (edited.ImageLaterality, edited.ViewPosition, edited.SyntheticData) == ("R", "CC", "YES")
    assert "lesion insertion" in edited.DerivationDescription
    masks, labels, referenced = read_segments(out / "lesions_seg.dcm")
    assert referenced == edited.SOPInstanceUID
    assert labels == ["lesion 1: mass", "lesion 2: calcifications"]
    for n, mask in enumerate(masks, 1):
        assert np.array_equal(mask, _u16(out / f"mask-0{n}.png") == 255)
    assert dciodvfy_report(out / "edited_mg.dcm") == []
    assert dciodvfy_report(out / "lesions_seg.dcm") == []


def test_a_lesion_given_as_a_mask_comes_back_as_that_mask(tmp_path, capsys, lesion_bundle, view):
    src = write_png16(tmp_path / "in.png", view.image)
    roi = np.zeros(view.image.shape, bool)
    roi[120:131, 140:155] = True  # an 11 x 15 rectangle inside the breast
    mask_file = write_png8(tmp_path / "roi.png", roi.astype(np.float32))
    out = tmp_path / "out"
    rc, stdout, _ = _run(
        capsys, str(src), "--lesion-mask", f"mass:{mask_file}", "--out", str(out), "--bundle", str(lesion_bundle)
    )
    assert rc == 0
    assert np.array_equal(_u16(out / "mask-01.png") == 255, roi)
    assert json.loads(stdout)["lesions"][0]["mask_pixels"] == int(roi.sum())


@pytest.mark.parametrize(
    ("lesion", "message"),
    [
        ("blob:128,150,14", "unknown kind 'blob'"),
        ("mass:128,150,-4", "lesion diameter must be a positive number"),
        ("mass:128,188,14", "reaches off the 256x192 image"),
        ("mass:300,150,14", "is off the 256x192 image"),
        ("mass:12,100,8", "outside the breast"),
        ("mass:128,150", "a lesion is KIND:ROW,COL,DIAMETER_PX"),
        ("mass:128,140,60", "this bundle edits at most"),
    ],
)
def test_a_bad_lesion_is_a_cli_error_naming_the_problem(tmp_path, capsys, lesion_bundle, view, lesion, message):
    src = write_png16(tmp_path / "in.png", view.image)
    out = tmp_path / "out"
    rc, _, err = _run(capsys, str(src), "--lesion", lesion, "--out", str(out), "--bundle", str(lesion_bundle))
    assert rc == 3 and message in err, err
    assert not out.exists()  # nothing written


def test_no_lesion_and_dicom_formats_for_a_png_are_refused(tmp_path, capsys, lesion_bundle, view):
    src = write_png16(tmp_path / "in.png", view.image)
    rc, _, err = _run(capsys, str(src), "--out", str(tmp_path / "o"), "--bundle", str(lesion_bundle))
    assert rc == 3 and "give at least one lesion" in err
    argv = [str(src), "--lesion", MASS, "--format", "png16,dicom-mg", "--out", str(tmp_path / "o")]
    rc, _, err = _run(capsys, *argv, "--bundle", str(lesion_bundle))
    assert rc == 3 and "needs a DICOM input" in err


def test_a_bundle_without_a_lesion_network_says_so(tmp_path, capsys, view):
    plain = create_random_bundle(tmp_path / "plain", preset="tiny")
    src = write_png16(tmp_path / "in.png", view.image)
    rc, _, err = _run(capsys, str(src), "--lesion", MASS, "--out", str(tmp_path / "o"), "--bundle", str(plain))
    assert rc != 0 and "has no lesion network" in err
