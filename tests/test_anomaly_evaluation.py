"""`mammogen evaluate anomaly`: every figure carries its threshold mode; the oracle scores what it should."""

from __future__ import annotations

import json
import math

import pytest

from app.cli.evaluate.anomaly import evaluate_cases, format_report, make_cases
from app.cli.main import main
from models.anomaly import anomaly_from_reconstructions
from models.anomaly_input import prepare
from models.geometry import MamboGeometry
from models.requests import AnomalyConfig
from tests.test_superres_cli import tiny_bundle  # noqa: F401  (module-scoped fixture)


def _oracle(cases):
    for c in cases:
        prep = prepare(c.image, MamboGeometry(s=128, k=1, overlap=0), companions=[c.healthy])
        c.result = anomaly_from_reconstructions(prep, list(prep.companions_global), AnomalyConfig())
    return cases


@pytest.fixture(scope="module")
def oracle_report():
    test = _oracle(make_cases(1000, 4, (128, 128), True, ("cc",)))
    val = _oracle(make_cases(11000, 2, (128, 128), True, ("cc",)))
    healthy = _oracle(make_cases(21000, 2, (128, 128), False, ("cc",)))
    return evaluate_cases(test, val, healthy, fixed_threshold=0.05, percentile=99.0, n_buckets=2)


def test_every_threshold_mode_is_reported_and_labelled(oracle_report):
    modes = oracle_report["modes"]
    assert list(modes) == ["fixed", "otsu", "percentile", "best_dice_val", "oracle_best_dice"]
    assert modes["fixed"]["threshold"] == 0.05 and modes["otsu"]["threshold"] is None
    assert "oracle upper bound" in modes["oracle_best_dice"]["label"]
    for mode, m in modes.items():
        assert all(b["threshold_mode"] == mode for b in m["by_lesion_size"])
    for rows in oracle_report["per_image"].values():
        assert [r["threshold_mode"] for r in rows] == list(modes)


def test_oracle_reconstruction_separates_masses_from_tissue(oracle_report):
    pooled = oracle_report["pooled"]
    assert pooled["threshold_mode"] == "threshold_free"
    assert pooled["auroc"] > 0.9 and pooled["auprc"] > 0.5
    assert oracle_report["modes"]["otsu"]["mean_iou"] > 0.5
    # on a perfect reconstruction healthy heat is exactly zero, so the 99th percentile is 0
    assert oracle_report["modes"]["percentile"]["threshold"] == 0.0


def test_lesion_size_buckets_split_the_test_images(oracle_report):
    buckets = oracle_report["modes"]["otsu"]["by_lesion_size"]
    assert [b["count"] for b in buckets] == [2, 2]
    assert buckets[0]["median_area_px"] <= buckets[1]["median_area_px"]


def test_report_names_the_mode_beside_every_figure(oracle_report):
    text = format_report(oracle_report, {"title": "t", "settings": {"test views": 4}})
    assert "| per-image Otsu | per image |" in text
    assert "IoU by lesion size [healthy-calibrated percentile]" in text
    assert "AUROC" in text and "threshold-free" in text


def test_cli_oracle_run_writes_the_report(tmp_path):
    argv = ["evaluate", "anomaly", "--oracle", "--bundle", str(tmp_path / "none"), "--size", "128", "128"]
    argv += ["--count", "2", "--val", "1", "--healthy", "1", "--buckets", "2", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["header"]["title"].startswith("ORACLE")
    assert (tmp_path / "r" / "examples.png").exists() and (tmp_path / "r" / "per_image.csv").exists()
    assert not math.isnan(report["pooled"]["auroc"])


@pytest.mark.slow
def test_cli_model_run_on_a_tiny_random_bundle(tmp_path, tiny_bundle):  # noqa: F811
    argv = ["evaluate", "anomaly", "--bundle", str(tiny_bundle), "--size", "64", "64", "--count", "1"]
    argv += ["--val", "1", "--healthy", "1", "--lambda", "2", "--seeds", "1", "--sampler", "ddpm", "--steps", "1000"]
    assert main([*argv, "--buckets", "1", "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert "RANDOM weights" in report["header"]["title"]


def test_phantoms_default_to_the_size_the_bundle_was_trained_on():
    from types import SimpleNamespace

    from app.cli.evaluate.anomaly import default_size, trained_image_size

    trained = SimpleNamespace(geometry={}, manifest={"training": {"data": {"images": {"size": [768, 576]}}}})
    assert trained_image_size(trained) == (768, 576)
    assert default_size(MamboGeometry(s=64, k=3), trained) == (768, 576)
    unknown = SimpleNamespace(geometry={}, manifest={"training": {"data": "random weights"}})
    assert trained_image_size(unknown) is None
    assert default_size(MamboGeometry(s=64, k=3), unknown) == (192, 192)
