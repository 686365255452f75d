"""`bench steps`: fewer steps are measured against the baseline image on the same seed, per job kind."""

from __future__ import annotations

import numpy as np
import pytest

from models.benchmarks.report import steps_table
from models.benchmarks.steps import bench_steps, parse_setting
from tests.service_support import make_dualview_bundle, make_mambo_bundle


def _rows(settings, **kw):
    return list(
        bench_steps(preset="tiny", patch=32, height=64, width=64, baseline=("ddim", 4), settings=settings, **kw)
    )


def _items(rows):
    return [r for r in rows if r.get("row") != "summary"]


def test_fewer_steps_cost_proportionally_fewer_evaluations_and_report_distance_and_seams():
    base, fast = _items(_rows([("dpmsolver", 2)]))
    assert base["steps"] == 4 and "mean_abs_diff_to_baseline" not in base
    assert fast["model_evaluations"] * 2 == base["model_evaluations"]
    assert fast["mean_abs_diff_to_baseline"] > 0 and fast["ssim_to_baseline"] < 1
    assert {"seam_ratio", "seam_worst_line_ratio", "speedup_vs_baseline"} <= fast.keys()


def test_the_baseline_setting_repeated_reproduces_the_baseline_image():
    _, again = _items(_rows([("ddim", 4)]))
    assert again["mean_abs_diff_to_baseline"] == 0.0
    assert again["psnr_db_to_baseline"] == float("inf")


def test_several_seeds_give_one_row_each_and_a_summary_with_their_mean():
    rows = _rows([("dpmsolver", 2)], seeds=(3, 4))
    items = [r for r in rows if r["setting"] == "dpmsolver:2" and r.get("row") != "summary"]
    summary = next(r for r in rows if r["setting"] == "dpmsolver:2" and r.get("row") == "summary")
    assert [r["seed"] for r in items] == [3, 4] and summary["items"] == 2
    mean = np.mean([r["mean_abs_diff_to_baseline"] for r in items])
    assert summary["mean_abs_diff_to_baseline"] == pytest.approx(mean)
    assert "mean_abs_diff_to_baseline_sd" in summary
    assert "| mambo | dpmsolver:2 | 2 |" in steps_table(rows)


def test_dualview_pairs_are_compared_view_by_view_and_report_their_consistency(tmp_path):
    bundle = make_dualview_bundle(tmp_path / "dv")
    rows = list(
        bench_steps(model="dualview", bundle=bundle, baseline=("ddim", 4), settings=[("dpmsolver", 2)], seeds=(0, 1))
    )
    base = [r for r in rows if r["setting"] == "ddim:4" and r.get("row") != "summary"]
    fast = [r for r in rows if r["setting"] == "dpmsolver:2" and r.get("row") != "summary"]
    assert len(base) == len(fast) == 2
    assert fast[0]["model_evaluations"] * 2 == base[0]["model_evaluations"] == 4
    assert all(r["mean_abs_diff_to_baseline"] > 0 and r["third_channel_error"] >= 0 for r in fast)


def test_superres_reports_the_distance_to_the_original_and_to_the_baseline(tmp_path):
    from training.phantoms import make_phantom_case

    bundle = make_mambo_bundle(tmp_path / "mambo")
    case = make_phantom_case(2000, (96, 96))
    originals = [("p", case.cc.image, case.cc.breast_mask, case.laterality)]
    rows = list(
        bench_steps(
            model="superres",
            bundle=bundle,
            baseline=("ddim", 2),
            settings=[("ddim", 2)],
            originals=originals,
            scale=2,
        )
    )
    again = [r for r in rows if r.get("row") == "summary"][1]  # the baseline setting, run again
    assert again["mean_abs_diff_to_baseline"] == 0.0
    assert np.isfinite(again["psnr_breast_to_truth"]) and 0 < again["ssim_to_truth"] <= 1


@pytest.mark.parametrize(("text", "parsed"), [("dpmsolver:20", ("dpmsolver", 20)), ("ddim:150", ("ddim", 150))])
def test_settings_parse_as_sampler_colon_steps(text, parsed):
    assert parse_setting(text) == parsed


def test_a_setting_without_steps_is_refused():
    with pytest.raises(ValueError):
        parse_setting("dpmsolver")
