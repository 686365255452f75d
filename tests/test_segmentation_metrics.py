"""Segmentation metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics.segmentation import (
    ImageScore,
    best_dice_threshold,
    confusion,
    dice,
    dice_at_thresholds,
    format_size_table,
    iou,
    iou_by_lesion_size,
    pixel_auprc,
    pixel_auroc,
    score_image,
)


def test_confusion_counts_each_pixel_once():
    pred = np.array([[1, 1, 0, 0]], bool)
    target = np.array([[0, 1, 1, 0]], bool)
    c = confusion(pred, target)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 1)


def test_iou_and_dice_match_hand_computed_values():
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    target = np.array([[0, 1, 1, 0], [1, 0, 0, 0]], bool)
    # TP = 2, FP = 1, FN = 1
    assert iou(pred, target) == pytest.approx(2 / 4)
    assert dice(pred, target) == pytest.approx(4 / 6)


def test_two_empty_masks_agree_perfectly():
    empty = np.zeros((3, 3), bool)
    assert iou(empty, empty) == 1.0
    assert dice(empty, empty) == 1.0


def test_one_empty_mask_scores_zero():
    empty = np.zeros((3, 3), bool)
    one = empty.copy()
    one[1, 1] = True
    assert iou(empty, one) == 0.0 and dice(empty, one) == 0.0
    assert iou(one, empty) == 0.0 and dice(one, empty) == 0.0


def test_masks_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


def test_non_binary_mask_is_refused():
    with pytest.raises(ValueError, match="boolean"):
        dice(np.array([0.0, 0.5]), np.array([0, 1]))


def test_auroc_matches_hand_computed_value():
    # positives 0.35, 0.8; negatives 0.1, 0.4: 3 of the 4 pairs are ordered correctly
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1], bool)
    assert pixel_auroc(scores, labels) == pytest.approx(0.75)


def test_auprc_matches_hand_computed_average_precision():
    # ranked: 0.8(+) P=1 R=.5; 0.4(-) P=.5; 0.35(+) P=2/3 R=1; AP = .5*1 + .5*2/3
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1], bool)
    assert pixel_auprc(scores, labels) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_tied_scores_count_one_half_and_form_one_operating_point():
    scores = np.array([0.5, 0.5, 0.2])
    labels = np.array([1, 0, 0], bool)
    assert pixel_auroc(scores, labels) == pytest.approx(0.75)  # pairs: tie (1/2) + win (1)
    assert pixel_auprc(scores, labels) == pytest.approx(0.5)  # the tie enters together: P = 1/2 at R = 1
    assert pixel_auprc(scores[::-1], labels[::-1]) == pytest.approx(0.5)  # independent of order


def test_perfect_and_inverted_rankings():
    labels = np.array([0, 0, 1, 1], bool)
    assert pixel_auroc(np.array([0.0, 0.1, 0.8, 0.9]), labels) == 1.0
    assert pixel_auprc(np.array([0.0, 0.1, 0.8, 0.9]), labels) == 1.0
    assert pixel_auroc(np.array([0.9, 0.8, 0.1, 0.0]), labels) == 0.0


def test_auroc_and_auprc_are_undefined_with_one_class():
    assert math.isnan(pixel_auroc(np.array([0.1, 0.2]), np.array([0, 0], bool)))
    assert math.isnan(pixel_auprc(np.array([0.1, 0.2]), np.array([0, 0], bool)))
    assert math.isnan(pixel_auroc(np.array([0.1, 0.2]), np.array([1, 1], bool)))


def test_auroc_pools_pixels_across_images_rather_than_averaging_images():
    # each image alone is perfectly ranked (AUROC 1), but image B's negatives outscore A's positive
    a_scores, a_labels = np.array([0.1, 0.2]), np.array([0, 1], bool)
    b_scores, b_labels = np.array([0.5, 0.6]), np.array([0, 1], bool)
    assert pixel_auroc(a_scores, a_labels) == 1.0
    pooled = pixel_auroc([a_scores, b_scores], [a_labels, b_labels])
    # positives {0.2, 0.6} vs negatives {0.1, 0.5}: 3 of 4 pairs right
    assert pooled == pytest.approx(0.75)


def test_regions_restrict_pooled_pixels():
    scores = np.array([[0.9, 0.1, 0.8]])
    labels = np.array([[0, 0, 1]], bool)
    region = np.array([[0, 1, 1]], bool)  # the confusing 0.9 lies outside the breast
    assert pixel_auroc(scores, labels) == pytest.approx(0.5)
    assert pixel_auroc(scores, labels, region) == 1.0


def test_dice_at_thresholds_matches_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.random((8, 8))
    target = rng.random((8, 8)) > 0.7
    thresholds = np.array([-1.0, 0.2, 0.5, 0.77, 2.0])
    expected = [dice(scores > t, target) for t in thresholds]
    np.testing.assert_allclose(dice_at_thresholds(scores, target, thresholds), expected)


def test_best_dice_threshold_finds_the_gap_between_classes():
    scores = [np.array([0.1, 0.2, 0.7, 0.9]), np.array([0.15, 0.3, 0.8, 0.85])]
    targets = [np.array([0, 0, 1, 1], bool), np.array([0, 0, 1, 1], bool)]
    choice = best_dice_threshold(scores, targets, thresholds=np.linspace(0, 1, 11))
    assert 0.3 <= choice.threshold < 0.7
    assert choice.mean_dice == 1.0
    assert choice.mode == "best_dice_val"


def _scores(areas: list[int], ious: list[float], mode: str = "otsu") -> list[ImageScore]:
    pairs = enumerate(zip(areas, ious, strict=True))
    return [ImageScore(f"img{i}", v, 2 * v / (1 + v), a, None, mode) for i, (a, v) in pairs]


def test_lesion_size_buckets_have_equal_counts_and_median_areas():
    areas = [2**k for k in range(13)]  # exponential, shuffled below
    ious = [k / 12 for k in range(13)]
    order = np.random.default_rng(1).permutation(13)
    buckets = iou_by_lesion_size(_scores([areas[i] for i in order], [ious[i] for i in order]), n_buckets=6)
    assert [b.count for b in buckets] == [3, 2, 2, 2, 2, 2]  # earlier buckets take the remainder
    assert buckets[0].median_area_px == 2.0  # {1, 2, 4}
    assert buckets[1].median_area_px == (8 + 16) / 2
    assert buckets[0].mean_iou == pytest.approx((0 + 1 + 2) / 12 / 3)
    assert buckets[-1].max_area_px == 4096
    assert all(b.threshold_mode == "otsu" for b in buckets)


def test_lesion_size_table_refuses_mixed_threshold_modes():
    mixed = _scores([10, 20], [0.5, 0.5], "otsu") + _scores([30], [0.5], "fixed")
    with pytest.raises(ValueError, match="threshold modes"):
        iou_by_lesion_size(mixed)


def test_lesion_size_table_names_its_threshold_mode():
    table = format_size_table(iou_by_lesion_size(_scores([10, 20, 40], [0.1, 0.2, 0.3], "percentile"), 3))
    assert "healthy-calibrated percentile" in table
    assert "| IoU | 0.100 | 0.200 | 0.300 |" in table


def test_score_image_records_mode_threshold_and_lesion_area():
    target = np.zeros((4, 4), bool)
    target[1:3, 1:3] = True
    s = score_image("a", target, target, 0.25, "fixed")
    assert (s.iou, s.dice, s.lesion_area_px, s.threshold, s.threshold_mode) == (1.0, 1.0, 4, 0.25, "fixed")
