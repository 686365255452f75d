"""`bench generate`: per-stage counts agree with the geometry table; speed-ups keep the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.acceleration import Acceleration
from models.benchmarks.counts import stitching_counts
from models.benchmarks.generation import bench_generate, build_pipeline, load_networks

H, W, S, STEPS = 96, 64, 32, 2
# fp32 batched and single calls differ by ~1e-6 in the prediction; a few-step sampler multiplies that
# by up to 1/sqrt(abar_999) ~ 156 when it turns the first prediction into x0, so images agree to ~1e-3.
FP32_IMAGE_TOL = 5e-3


@pytest.fixture(scope="module")
def rows():
    """Candidate (wavefront, fp32 channels_last + SDPA) and the raster/batch-1/fp32 reference, one run."""
    return list(
        bench_generate(
            preset="tiny",
            height=H,
            width=W,
            patch=S,
            steps=STEPS,
            stitching="wavefront",
            acceleration=Acceleration(channels_last=True, sdpa=True),
            reference=True,
            skip_background=False,
            measure_peak=False,
        )
    )


def _total(rows, config):
    return next(r for r in rows if r.get("config") == config and r["stage"] == "total")


def test_generate_rows_cover_each_stage_of_both_configurations(rows):
    stages = [(r.get("config"), r["stage"]) for r in rows]
    for config in ("candidate", "reference"):
        assert [s for c, s in stages if c == config] == ["global", "local", "patch", "total"]
    assert stages[-1] == (None, "comparison")


def test_measured_counts_equal_the_geometry_table(rows):
    table = {r["mode"]: r for r in stitching_counts(H, W, STEPS, patch=S, gflop_per_pass=1.0)}
    cand, ref = _total(rows, "candidate"), _total(rows, "reference")
    assert cand["model_evaluations"] == ref["model_evaluations"] == table["wavefront"]["evaluations"]
    assert cand["sequential_calls"] == table["wavefront"]["sequential_calls"]
    assert ref["sequential_calls"] == table["raster"]["sequential_calls"]
    assert cand["sequential_calls"] < ref["sequential_calls"]


def test_fp32_speedups_with_wavefront_reproduce_the_raster_reference(rows):
    comparison = rows[-1]
    assert comparison["exact_reordering"] is True
    assert comparison["max_abs_diff"] < FP32_IMAGE_TOL
    assert comparison["sequential_calls_ratio"] > 1


def test_bf16_network_is_batch_invariant_up_to_bf16_rounding():
    """Wavefront batches tiles that raster runs one by one: in bf16 the two round differently by at most
    a couple of bf16 ulps of the prediction, the same order as bf16 vs fp32 itself (no other change)."""
    nets = load_networks(None, "tiny", S)
    pipe = build_pipeline(nets, Acceleration(dtype=torch.bfloat16, channels_last=True), torch.device("cpu"))
    x = torch.randn(4, 3, S, S, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    batched = pipe.patch_unet(x, t).sample
    single = torch.cat([pipe.patch_unet(x[i : i + 1], t).sample for i in range(4)])
    ulp = 2.0**-7 * batched.abs().max()  # bf16 spacing at the largest prediction
    assert (batched - single).abs().max() <= 2 * ulp


def test_fused_mode_is_flagged_as_not_an_exact_reordering():
    rows = list(
        bench_generate(
            preset="tiny", height=64, width=64, patch=S, steps=1, stitching="fused", reference=True, measure_peak=False
        )
    )
    assert rows[-1]["exact_reordering"] is False
    cand = _total(rows, "candidate")
    assert cand["sequential_calls"] == 3  # one call per stage per step


def test_saved_images_are_what_was_compared(tmp_path):
    from models.imaging.files import read_png

    rows = list(
        bench_generate(
            preset="tiny", height=64, width=64, patch=S, steps=1, reference=True, measure_peak=False, save_dir=tmp_path
        )
    )
    cand, ref = read_png(tmp_path / "candidate.png"), read_png(tmp_path / "reference.png")
    assert cand.shape == ref.shape == (64, 64)
    assert np.abs(cand - ref).max() <= rows[-1]["max_abs_diff"] + 2.0 / 65535
    assert (tmp_path / "abs_diff_x10.png").exists()


def test_bf16_generation_stays_close_to_the_fp32_reference():
    """bf16 rounds the prediction by ~1 % of its RMS each call; through a few random-weight steps that
    moves a handful of pixels a lot (random networks saturate) but leaves the image as a whole in place."""
    rows = list(
        bench_generate(
            preset="tiny",
            height=64,
            width=64,
            patch=S,
            steps=STEPS,
            acceleration=Acceleration(dtype=torch.bfloat16, channels_last=True),
            reference=True,
            skip_background=False,
            measure_peak=False,
        )
    )
    comparison = rows[-1]
    assert 0 < comparison["mean_abs_diff"] < 0.01
    assert comparison["fraction_pixels_off_by_over_1_256"] < 0.1


def test_images_of_one_job_share_calls_and_match_one_by_one_references():
    rows = list(
        bench_generate(
            preset="tiny",
            height=64,
            width=64,
            patch=S,
            steps=1,
            images=2,
            acceleration=Acceleration(channels_last=True, sdpa=True),
            reference=True,
            skip_background=False,
            measure_peak=False,
        )
    )
    cand, ref = _total(rows, "candidate"), _total(rows, "reference")
    one = {r["mode"]: r for r in stitching_counts(64, 64, 1, patch=S, gflop_per_pass=1.0)}
    assert cand["model_evaluations"] == ref["model_evaluations"] == 2 * one["wavefront"]["evaluations"]
    assert cand["sequential_calls"] == one["wavefront"]["sequential_calls"]  # two images, same depth
    assert ref["sequential_calls"] == 2 * one["raster"]["sequential_calls"]
    assert rows[-1]["images"] == 2 and rows[-1]["max_abs_diff"] < FP32_IMAGE_TOL


def test_generate_from_a_bundle_uses_its_networks_and_geometry():
    from app.settings import DEMO_BUNDLE_DIR

    rows = list(
        bench_generate(
            bundle=DEMO_BUNDLE_DIR / "demo-mambo", height=64, width=64, steps=1, reference=False, measure_peak=False
        )
    )
    total = _total(rows, "candidate")
    assert total["networks"].startswith("bundle demo-mambo") and total["patch"] == 64
    assert total["model_evaluations"] == total["tiles"]  # one step: one evaluation per denoised (active) tile
