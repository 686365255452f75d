"""`mammogen dualview` and `mammogen evaluate dualview` end to end on a tiny random-weight bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from app.cli.evaluate.dualview import discover_pairs
from app.cli.main import main
from models.bundle import save_bundle
from models.dualview import DualViewPipeline
from models.errors import BadInputError, BundleNotFoundError
from models.imaging.dicom_write import write_dualview_pair
from models.imaging.files import read_png, write_png16
from models.intensity import DEFAULT_INTENSITY
from models.options import SamplingOptions
from models.schedulers import NOISE_SCHEDULE
from models.unet import build_unet

SIZE = 16


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_bundle(
        tmp_path_factory.mktemp("bundles") / "tiny-dualview",
        kind="dualview",
        name="tiny-dualview",
        version="0.0.1-test",
        networks={"dualview": build_unet("tiny", 3, 3, sample_size=SIZE)},
        geometry={"size": SIZE, "chest_wall": "left"},
        intensity=DEFAULT_INTENSITY,
        schedule=NOISE_SCHEDULE,
        training={"data": "none (random weights)"},
        random_weights=True,
    )


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def test_pipeline_loads_a_dualview_bundle_and_generates(bundle):
    pipe = DualViewPipeline.from_bundle(bundle)
    assert (pipe.height, pipe.width) == (SIZE, SIZE) and pipe.version == "0.0.1-test"
    res = pipe(SamplingOptions(seeds=(1, 2), steps=2))
    assert res.cc.shape == (2, SIZE, SIZE)


def test_dualview_command_writes_png16_and_one_study_per_pair(bundle, tmp_path, capsys):
    out = tmp_path / "pairs"
    argv = ["dualview", "--bundle", str(bundle), "--count", "2", "--out", str(out)]
    code, stdout = _run([*argv, "--steps", "2", "--laterality", "both", "--format", "png,dicom,rgb"], capsys)
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "dualview.json").read_text())
    p0, p1 = summary["pairs"]
    assert (p0["laterality"], p1["laterality"]) == ("R", "L") and (p0["seed"], p1["seed"]) == (0, 1)
    assert Path(p0["cc_png"]).name == "pair_0000_R_CC.png" and Path(p1["mlo_dcm"]).name == "pair_0001_L_MLO.dcm"
    with Image.open(p0["cc_png"]) as im:
        assert im.mode.startswith("I;16") and im.size == (SIZE, SIZE)

    cc, mlo = pydicom.dcmread(p0["cc_dcm"]), pydicom.dcmread(p0["mlo_dcm"])
    assert cc.StudyInstanceUID == mlo.StudyInstanceUID
    assert cc.SeriesInstanceUID == mlo.SeriesInstanceUID
    assert cc.SOPInstanceUID != mlo.SOPInstanceUID
    assert (cc.ViewPosition, mlo.ViewPosition) == ("CC", "MLO")
    assert cc.ImageLaterality == mlo.ImageLaterality == "R"
    for ds in (cc, mlo):
        assert ds.Modality == "MG" and ds.ConversionType == "SYN" and ds.BurnedInAnnotation == "NO"
        assert "SYNTHETIC" in ds.SeriesDescription and ds.BitsStored == 16
    np.testing.assert_array_equal(cc.pixel_array, np.asarray(Image.open(p0["cc_png"])))
    other = pydicom.dcmread(p1["cc_dcm"])
    assert other.StudyInstanceUID != cc.StudyInstanceUID and other.ImageLaterality == "L"


def test_dualview_command_without_a_bundle_says_how_to_make_one(tmp_path, capsys):
    code = main(["dualview", "--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == BundleNotFoundError.exit_code
    assert "bundle create --kind dualview" in capsys.readouterr().err


def _rect(box: tuple[int, int, int, int], size: int = 64) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    img[box[0] : box[1], box[2] : box[3]] = 1.0
    return img


def test_evaluate_dualview_reports_hand_computed_tables(tmp_path, capsys):
    real, syn = tmp_path / "real", tmp_path / "syn"
    # Real, as PNG names: IoU 800/1200 = 2/3 (Dice 0.8), and 1 (the MLO faces right: turned first).
    write_png16(real / "case01_R_CC.png", _rect((10, 50, 0, 30)))
    write_png16(real / "case01_R_MLO.png", _rect((10, 50, 0, 20)))
    write_png16(real / "case02_L_CC.png", _rect((10, 50, 0, 30)))
    write_png16(real / "case02_L_MLO.png", _rect((10, 50, 34, 64)))
    write_png16(real / "case02_L_mask.png", _rect((0, 5, 0, 5)))  # not a view
    write_png16(real / "case03_R_CC.png", _rect((0, 5, 0, 5)))  # no partner
    # Synthetic, as DICOM pairs: IoU 640/1280 = 1/2 (Dice 2/3), and 1.
    write_dualview_pair(syn / "a", _rect((0, 40, 0, 32)), _rect((0, 40, 0, 16)), laterality="R", **_model())
    write_dualview_pair(syn / "b", _rect((0, 40, 0, 32)), _rect((0, 40, 0, 32)), laterality="L", **_model())

    report_path = tmp_path / "report.json"
    argv = ["evaluate", "dualview", "--real", str(real), "--synthetic", str(syn), "--size", "0"]
    code, stdout = _run([*argv, "--out", str(report_path)], capsys)
    assert code == 0 and "Table 1" in stdout and "Table 2" in stdout
    rep = json.loads(report_path.read_text())
    assert rep["real"]["source"] == "png" and rep["synthetic"]["source"] == "dicom"
    assert rep["real"]["unpaired"] == ["case03_R_CC.png"]
    t1 = rep["table1"]
    assert t1["iou"]["real"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert t1["dice"]["real"]["min"] == pytest.approx(0.8)
    assert t1["iou"]["synthetic"]["median"] == pytest.approx(0.75)
    assert t1["dice"]["synthetic"]["min"] == pytest.approx(2 / 3)
    assert t1["iou"]["synthetic"]["mean_difference"] == pytest.approx(0.75 - 5 / 6)
    # ECDFs of {2/3, 1} and {1/2, 1} differ by 1/2 on [1/2, 2/3); EMD = mean |sorted diff| = 1/12.
    assert rep["table2"]["iou"]["ks_d"] == pytest.approx(0.5)
    assert rep["table2"]["iou"]["emd"] == pytest.approx(1 / 12)


def _model() -> dict[str, str]:
    return {"model_name": "test", "model_version": "0"}


def test_evaluate_reads_the_dualview_command_output(bundle, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["dualview", "--bundle", str(bundle), "--count", "3", "--out", str(out), "--steps", "1"]) == 0
    capsys.readouterr()
    found = discover_pairs(out)
    assert found.source == "dicom" and len(found.pairs) == 3 and not found.unpaired
    by_name = discover_pairs(out, "png")
    assert list(by_name.pairs) == list(found.pairs) == ["pair_0000_R_CC", "pair_0001_R_CC", "pair_0002_R_CC"]
    cc_path, _ = by_name.pairs[sorted(by_name.pairs)[0]]
    assert cc_path.name == "pair_0000_R_CC.png" and read_png(cc_path).shape == (SIZE, SIZE)

    # A set against itself: identical distributions, and the generator's third-channel check carried over.
    report = tmp_path / "self.json"
    assert main(["evaluate", "dualview", "--real", str(out), "--synthetic", str(out), "--out", str(report)]) == 0
    rep = json.loads(report.read_text())
    assert rep["table2"]["iou"] == {"ks_d": 0.0, "ks_p": 1.0, "emd": 0.0}
    assert rep["table1"]["dice"]["synthetic"]["mean_difference"] == 0.0
    errors = [p["third_channel_error"] for p in json.loads((out / "dualview.json").read_text())["pairs"]]
    assert rep["third_channel"]["n"] == 3 and rep["third_channel"]["max"] == max(errors)
    assert "Third channel" in capsys.readouterr().out


def test_evaluate_refuses_a_folder_without_pairs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no CC/MLO pairs"):
        discover_pairs(tmp_path / "empty")
