"""`mammogen evaluate super-resolution`: one table, PSNR/SSIM by scale and method."""

from __future__ import annotations

import json

import pytest

from app.cli.evaluate.superres import default_size, format_table, summarize
from app.cli.main import main
from tests.test_superres_cli import tiny_bundle  # noqa: F401  (module-scoped fixture)


def test_summary_averages_per_scale_and_method_in_input_order():
    rows = [
        {"scale": 4, "method": "bicubic", "psnr_breast": 30.0, "ssim": 0.9},
        {"scale": 4, "method": "MAMBO", "psnr_breast": 28.0, "ssim": 0.8},
        {"scale": 4, "method": "bicubic", "psnr_breast": 32.0, "ssim": 0.7},
    ]
    table = summarize(rows)
    assert [(t["scale"], t["method"]) for t in table] == [(4, "bicubic"), (4, "MAMBO")]
    assert table[0]["psnr_breast_mean"] == 31.0 and table[0]["psnr_breast_sd"] == 1.0
    assert table[0]["ssim_mean"] == pytest.approx(0.8) and table[0]["images"] == 2
    text = format_table(table, {"title": "t", "settings": {}})
    assert "| 4x | bicubic | 31.00 ± 1.00 | 0.800 ± 0.100 | 2 |" in text


def test_default_size_is_one_canvas_block_divisible_by_the_largest_scale():
    assert default_size(256, 3, 16) == (768, 768)
    assert default_size(32, 3, 16) == (96, 96)
    assert default_size(32, 2, 16) == (64, 64)
    assert default_size(64, 3, 16, (768, 576)) == (768, 576)  # the bundle's training size wins
    assert default_size(64, 3, 16, (770, 570)) == (784, 576)


def test_scales_that_do_not_divide_the_size_are_refused(tmp_path, tiny_bundle):  # noqa: F811
    argv = ["evaluate", "super-resolution", "--bundle", str(tiny_bundle), "--size", "60", "60", "--scales", "16"]
    assert main(argv) == 3


@pytest.mark.slow
def test_cli_run_on_a_tiny_random_bundle_writes_one_table(tmp_path, tiny_bundle):  # noqa: F811
    argv = ["evaluate", "super-resolution", "--bundle", str(tiny_bundle), "--count", "1", "--scales", "2"]
    assert main([*argv, "--steps", "1", "--size", "64", "64", "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {(t["scale"], t["method"]) for t in report["table"]} == {(2, "bicubic"), (2, "MAMBO stages 2-3")}
    assert (tmp_path / "r" / "examples.png").exists()
