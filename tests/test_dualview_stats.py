"""The dual-view paper's statistics, checked against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.metrics.dualview_stats import (
    PairOverlap,
    bootstrap_ci,
    compare_distributions,
    describe,
    evaluate_pairs,
    format_tables,
    mask_overlap,
    pair_overlap,
    third_channel_error,
    view_mask,
)


def _rect(h: int = 64, w: int = 64, box=(10, 50, 0, 30), value: float = 1.0) -> np.ndarray:
    img = np.zeros((h, w), np.float32)
    r0, r1, c0, c1 = box
    img[r0:r1, c0:c1] = value
    return img


def test_iou_and_dice_of_two_shifted_masks_match_hand_computation():
    a = np.zeros((2, 4), bool)
    a[:, 0:2] = True  # 4 pixels
    b = np.zeros((2, 4), bool)
    b[:, 1:3] = True  # 4 pixels, 2 shared
    assert mask_overlap(a, b) == pytest.approx((2 / 6, 2 * 2 / 8))
    assert mask_overlap(a, a) == (1.0, 1.0)


def test_empty_masks_give_nan_not_a_division_error():
    empty = np.zeros((3, 3), bool)
    one = empty.copy()
    one[1, 1] = True
    assert all(math.isnan(v) for v in mask_overlap(empty, empty))
    assert mask_overlap(empty, one) == (0.0, 0.0)


def test_otsu_mask_is_strict_on_a_two_level_image():
    # skimage's Otsu returns the dark level itself here; `>=` would mark the whole image as breast.
    img = _rect()
    mask = view_mask(img)
    np.testing.assert_array_equal(mask, img > 0)


def test_percentiles_are_clipped_before_otsu_so_a_hot_pixel_does_not_steal_the_mask():
    img = _rect(value=0.3)
    img[60, 60] = 100.0  # one hot pixel (< 0.5% of the image)
    np.testing.assert_array_equal(view_mask(img), _rect() > 0)


def test_constant_view_gives_an_empty_mask_and_the_pair_is_excluded():
    flat = np.full((32, 32), 0.4, np.float32)
    assert not view_mask(flat).any()
    p = pair_overlap(flat, flat, "flat")
    assert p.both_empty and math.isnan(p.iou) and math.isnan(p.dice)
    good = PairOverlap("good", 0.5, 2 / 3, 0.3, 0.3)
    report = evaluate_pairs([p, good], [good])
    assert report.excluded == {"real": ["flat"], "synthetic": []}
    assert report.table1["iou"]["real"]["n"] == 1
    json.dumps(report.to_dict(), allow_nan=False)  # strict JSON: NaN written as null


def test_pair_overlap_of_two_rectangles():
    cc = _rect(box=(10, 50, 0, 30))  # 40 x 30 = 1200 px
    mlo = _rect(box=(10, 50, 0, 20))  # 40 x 20 = 800 px, inside cc
    p = pair_overlap(cc, mlo, "p")
    assert p.iou == pytest.approx(800 / 1200)
    assert p.dice == pytest.approx(2 * 800 / 2000)
    assert p.cc_area == pytest.approx(1200 / 4096)


def test_table1_statistics_match_hand_computation():
    d = describe([0.0, 0.5, 0.5, 1.0, float("nan")])  # the NaN (empty pair) is dropped
    assert d["n"] == 4
    assert d["mean"] == pytest.approx(0.5)
    assert d["std"] == pytest.approx(math.sqrt(0.5 / 3))  # sample std, ddof = 1
    assert d["min"] == 0.0 and d["max"] == 1.0
    assert d["q1"] == pytest.approx(0.375)  # position 0.75 between 0 and 0.5
    assert d["median"] == pytest.approx(0.5)
    assert d["q3"] == pytest.approx(0.625)  # position 2.25 between 0.5 and 1
    assert d["iqr"] == pytest.approx(0.25)


def test_ks_and_emd_match_hand_computation():
    # ECDFs of {1,2,3,4} and {3,4,5,6} differ by at most 1/2; each sorted value moves by 2.
    t = compare_distributions([1, 2, 3, 4], [3, 4, 5, 6])
    assert t["ks_d"] == pytest.approx(0.5)
    assert t["emd"] == pytest.approx(2.0)
    # Unequal sizes: |F_a - F_b| is 1/2 on [0, 1), so EMD = 1/2 and D = 1/2.
    t = compare_distributions([0.0, 1.0], [0.5])
    assert t["ks_d"] == pytest.approx(0.5)
    assert t["emd"] == pytest.approx(0.5)
    same = compare_distributions([0.2, 0.4, 0.6], [0.2, 0.4, 0.6])
    assert same == {"ks_d": 0.0, "ks_p": 1.0, "emd": 0.0}


def test_ks_p_value_falls_as_the_distributions_separate():
    rng = np.random.default_rng(0)
    a = rng.normal(0.65, 0.1, 200)
    assert compare_distributions(a, a + 0.2)["ks_p"] < 1e-6 < compare_distributions(a, a + 0.005)["ks_p"]


def test_mean_difference_is_synthetic_minus_real():
    real = [PairOverlap(f"r{i}", v, v, 0.3, 0.3) for i, v in enumerate([0.6, 0.7])]
    syn = [PairOverlap(f"s{i}", v, v, 0.3, 0.3) for i, v in enumerate([0.7, 0.8])]
    report = evaluate_pairs(real, syn)
    assert report.table1["iou"]["synthetic"]["mean_difference"] == pytest.approx(0.1)
    assert report.table2["dice"]["emd"] == pytest.approx(0.1)
    text = format_tables(report)
    assert "Mean difference (vs real)" in text and "KS D" in text and "EMD" in text


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    real, syn = rng.normal(0.65, 0.1, 60), rng.normal(0.70, 0.1, 60)
    ci = bootstrap_ci(real, syn, n_boot=200, seed=3)
    lo, hi = ci["mean_difference"]
    assert lo < syn.mean() - real.mean() < hi
    assert ci == bootstrap_ci(real, syn, n_boot=200, seed=3)


def test_third_channel_error_is_zero_for_a_consistent_encoding_and_measures_the_offset():
    rng = np.random.default_rng(2)
    r, g = rng.random((8, 8)), rng.random((8, 8))
    rgb = np.stack([r, g, np.abs(r - g)])
    assert third_channel_error(rgb) == pytest.approx(0.0)
    rgb[2] = np.clip(rgb[2] + 0.1, None, None)
    assert third_channel_error(rgb) == pytest.approx(0.1)
