"""`bench steps`: fewer steps are measured against the baseline image on the same seed."""

from __future__ import annotations

import pytest

from models.benchmarks.steps import bench_steps, parse_setting


def _rows(settings):
    return list(bench_steps(preset="tiny", patch=32, height=64, width=64, baseline=("ddim", 4), settings=settings))


def test_fewer_steps_cost_proportionally_fewer_evaluations_and_report_distance_and_seams():
    base, fast = _rows([("dpmsolver", 2)])
    assert base["steps"] == 4 and "mean_abs_diff_to_baseline" not in base
    assert fast["model_evaluations"] * 2 == base["model_evaluations"]
    assert fast["mean_abs_diff_to_baseline"] > 0 and fast["ssim_to_baseline"] < 1
    assert {"seam_ratio", "seam_worst_line_ratio", "speedup_vs_baseline"} <= fast.keys()


def test_the_baseline_setting_repeated_reproduces_the_baseline_image():
    _, again = _rows([("ddim", 4)])
    assert again["mean_abs_diff_to_baseline"] == 0.0
    assert again["psnr_db_to_baseline"] == float("inf")


@pytest.mark.parametrize(("text", "parsed"), [("dpmsolver:20", ("dpmsolver", 20)), ("ddim:150", ("ddim", 150))])
def test_settings_parse_as_sampler_colon_steps(text, parsed):
    assert parse_setting(text) == parsed


def test_a_setting_without_steps_is_refused():
    with pytest.raises(ValueError):
        parse_setting("dpmsolver")
