"""Evaluation counts and sequential depth per stitching mode at 3840x3840, from the geometry alone."""

from __future__ import annotations

import json

from app.cli.main import main
from models.benchmarks.counts import stitching_counts


def _rows(**kw):
    return {r["mode"]: r for r in stitching_counts(3840, 3840, 150, gflop_per_pass=495.0, **kw)}


def test_3840_square_has_1_global_36_local_289_patch_tiles():
    rows = _rows()
    for row in rows.values():
        assert row["grids"] == {"local": [6, 6], "patch": [17, 17]}
        assert row["tiles_per_image"] == 1 + 36 + 289 == 326


def test_every_mode_evaluates_the_same_48900_tiles_at_150_steps():
    assert {r["evaluations"] for r in _rows().values()} == {326 * 150}


def test_sequential_depth_is_326_raster_45_wavefront_3_fused_per_step():
    rows = _rows()
    assert rows["raster"]["sequential_calls_per_step"] == 1 + 36 + 289
    assert rows["wavefront"]["sequential_calls_per_step"] == 1 + 11 + 33
    assert rows["fused"]["sequential_calls_per_step"] == 3
    assert rows["wavefront"]["stages"]["patch"]["batch_histogram"][17] == 1  # the main anti-diagonal


def test_chunking_caps_every_call_and_keeps_the_evaluations():
    rows = _rows(max_batch=8)
    for row in rows.values():
        assert row["evaluations"] == 48900
        for stage in row["stages"].values():
            assert max(stage["batch_histogram"]) <= 8
    # fused: ceil(36/8) + ceil(289/8) + 1 global = 5 + 37 + 1
    assert rows["fused"]["sequential_calls_per_step"] == 43


def test_images_in_lock_step_multiply_evaluations_not_depth():
    one, four = _rows(), _rows(images=4)
    for mode in ("wavefront", "fused"):
        assert four[mode]["evaluations"] == 4 * one[mode]["evaluations"]
        assert four[mode]["sequential_calls"] == one[mode]["sequential_calls"]
    assert four["raster"]["sequential_calls"] == 4 * one["raster"]["sequential_calls"]


def test_ideal_time_is_flops_over_h100_bf16_peak():
    row = _rows()["raster"]
    assert row["pflop"] == 48900 * 495.0 / 1e6
    assert abs(row["ideal_seconds_h100_bf16"] - row["pflop"] * 1e15 / 989e12) < 1e-9


def test_non_square_request_tiles_each_axis_separately():
    rows = {r["mode"]: r for r in stitching_counts(3328, 2560, 10, gflop_per_pass=1.0)}
    # patch grid: ceil((3328-256)/224)+1 = 15 rows, ceil((2560-256)/224)+1 = 12 cols
    assert rows["raster"]["grids"]["patch"] == [15, 12]
    assert rows["wavefront"]["stages"]["patch"]["sequential_calls"] == (15 + 12 - 1) * 10


def test_counts_cli_prints_one_json_line_per_mode(capsys):
    assert main(["bench", "counts", "--height", "1024", "--width", "768", "--steps", "5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["mode"] for r in rows] == ["raster", "wavefront", "fused"]
    assert all(r["gflop_per_pass"] > 400 for r in rows)  # the paper preset's cost, counted
