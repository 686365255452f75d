"""`mammogen super-resolve` end to end on a tiny random-weight MAMBO bundle: PNG and DICOM in, files out."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from app.cli.main import main
from models.bundle import save_bundle
from models.errors import BadInputError, BundleNotFoundError
from models.geometry import MamboGeometry
from models.imaging.files import read_png, write_png16
from models.imaging.mask import breast_mask
from models.imaging.orientation import side_from_content
from models.intensity import DEFAULT_INTENSITY
from models.metrics.image_quality import downsample_area
from models.schedulers import NOISE_SCHEDULE
from models.unet import build_unet
from tests.imaging_support import phantom_dicom
from training.phantoms import make_phantom_case


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    torch.manual_seed(0)
    nets = {"global": build_unet("tiny", 1, 1, 32), "local": build_unet("tiny", 3, 1, 32)}
    nets["patch"] = build_unet("tiny", 3, 1, 32)
    return save_bundle(
        tmp_path_factory.mktemp("bundle") / "tiny",
        kind="mambo",
        name="tiny-random",
        version="0",
        networks=nets,
        geometry=MamboGeometry(s=32, k=2, overlap=8).to_dict(),
        intensity=DEFAULT_INTENSITY,
        schedule=NOISE_SCHEDULE,
        training={"data": "none: random weights"},
        random_weights=True,
    )


@pytest.fixture(scope="module")
def right_breast_low() -> np.ndarray:
    case = make_phantom_case(29, (64, 48), laterality="R")
    return downsample_area(case.cc.image, 2)  # 32 x 24, chest wall on the right


def test_png_input_gives_a_png_of_the_target_size_in_the_input_orientation(tmp_path, tiny_bundle, right_breast_low):
    src = write_png16(tmp_path / "low.png", right_breast_low)
    out = tmp_path / "out"
    argv = ["super-resolve", str(src), "--scale", "2", "--steps", "1", "--out", str(out), "--bundle", str(tiny_bundle)]
    assert main(argv) == 0
    sr = read_png(out / "superres.png")
    assert sr.shape == (64, 48)
    assert side_from_content(sr, breast_mask(read_png(out / "bicubic.png"))) == "right"
    summary = json.loads((out / "superres.json").read_text())
    assert summary["output_size"] == [64, 48] and summary["orientation"]["flipped"] is True
    assert not (out / "superres.dcm").exists()  # PNG in, no DICOM out


def test_dicom_input_gives_a_derived_dicom_in_the_same_study(tmp_path, tiny_bundle, right_breast_low):
    study = generate_uid()
    src = phantom_dicom(
        tmp_path / "low.dcm",
        right_breast_low,
        laterality="R",
        view="CC",
        patient_id="P1",
        study_uid=study,
        bits_stored=12,
        pixel_spacing_mm=0.2,
    )
    out = tmp_path / "out"
    argv = ["super-resolve", str(src), "--scale", "2", "--steps", "1", "--out", str(out), "--bundle", str(tiny_bundle)]
    assert main(argv) == 0
    ds = pydicom.dcmread(out / "superres.dcm")
    assert ds.StudyInstanceUID == study
    assert (ds.Rows, ds.Columns) == (64, 48)
    assert "DERIVED" in ds.ImageType
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.1, 0.1])  # 2x finer than the input


def test_unreadable_file_fails_with_the_bad_input_exit_code(tmp_path, tiny_bundle, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    argv = ["super-resolve", str(bad), "--scale", "4", "--out", str(tmp_path / "o"), "--bundle", str(tiny_bundle)]
    assert main(argv) == BadInputError.exit_code
    assert "error" in capsys.readouterr().err


def test_missing_input_fails_with_the_bad_input_exit_code(tmp_path, tiny_bundle):
    argv = ["super-resolve", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o"), "--bundle", str(tiny_bundle)]
    assert main(argv) == BadInputError.exit_code


def test_missing_bundle_fails_with_the_bundle_exit_code(tmp_path, right_breast_low, capsys):
    src = write_png16(tmp_path / "low.png", right_breast_low)
    argv = ["super-resolve", str(src), "--out", str(tmp_path / "o"), "--bundle", str(tmp_path / "no-bundle")]
    assert main(argv) == BundleNotFoundError.exit_code
    assert "bundle create" in capsys.readouterr().err
