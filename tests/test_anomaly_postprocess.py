"""Anomaly-map post-processing: residual kinds, ensemble, eroded mask, median filter, thresholds, overlay."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly_postprocess import (
    PAPER_POST,
    STRONG_POST,
    binarize,
    calibrate_percentile,
    combine_residuals,
    eroded_region,
    heat_map,
    overlay,
    residual_map,
)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_l1_residual_is_absolute_and_positive_residual_keeps_only_brighter_input():
    x = np.array([[0.5, 0.5, 0.5]], np.float32)
    x_hat = np.array([[0.3, 0.5, 0.8]], np.float32)
    breast = np.ones_like(x, bool)
    np.testing.assert_allclose(residual_map(x, x_hat, breast, kind="l1"), [[0.2, 0.0, 0.3]], atol=1e-6)
    np.testing.assert_allclose(residual_map(x, x_hat, breast, kind="positive"), [[0.2, 0.0, 0.0]], atol=1e-6)


def test_residual_is_zero_outside_the_breast():
    x = np.ones((4, 4), np.float32)
    breast = np.zeros((4, 4), bool)
    breast[:, :2] = True
    res = residual_map(x, np.zeros_like(x), breast)
    assert res[:, :2].min() == 1.0 and res[:, 2:].max() == 0.0


def test_histogram_matching_removes_a_global_brightness_drift():
    rng = np.random.default_rng(0)
    x = rng.random((32, 32)).astype(np.float32) * 0.5 + 0.2
    breast = np.ones_like(x, bool)
    drifted = x * 0.8 + 0.15  # the same tissue, reconstructed brighter and flatter
    assert residual_map(x, drifted, breast).mean() > 0.05
    assert residual_map(x, drifted, breast, histogram_match=True).max() < 1e-3


def test_unknown_residual_kind_is_refused():
    with pytest.raises(ValueError, match="residual kind"):
        residual_map(np.zeros((2, 2)), np.zeros((2, 2)), np.ones((2, 2), bool), kind="l2")


def test_seed_ensemble_mean_and_median():
    maps = [np.full((2, 2), v, np.float32) for v in (0.0, 0.1, 0.8)]
    np.testing.assert_allclose(combine_residuals(maps, "mean"), 0.3, atol=1e-6)
    np.testing.assert_allclose(combine_residuals(maps, "median"), 0.1, atol=1e-6)
    with pytest.raises(ValueError):
        combine_residuals([])


def test_eroded_region_removes_a_rim_of_erode_px():
    breast = np.zeros((30, 30), bool)
    breast[5:25, 5:25] = True
    inner = eroded_region(breast, 3)
    assert inner.sum() == 14 * 14
    assert inner[8:22, 8:22].all()
    assert eroded_region(breast, 0).sum() == 400


@pytest.mark.parametrize("erode_px", [1, 4, 9])
def test_eroded_region_equals_square_erosion_with_background_outside_the_image(erode_px):
    from scipy import ndimage

    rng = np.random.default_rng(erode_px)
    breast = ndimage.binary_fill_holes(ndimage.gaussian_filter(rng.random((80, 60)), 3) > 0.5)
    breast[:, :2] = True  # touches the image border, like a chest wall
    reference = ndimage.binary_erosion(breast, structure=np.ones((2 * erode_px + 1,) * 2, bool), border_value=0)
    np.testing.assert_array_equal(eroded_region(breast, erode_px), reference)


def test_heat_map_median_filter_removes_speckle_but_keeps_a_blob():
    residual = np.zeros((40, 40), np.float32)
    residual[5, 5] = 1.0  # a single hot pixel: diffusion noise, not a lesion
    blob = _disc((40, 40), (25, 25), 5)
    residual[blob] = 0.5
    region = np.ones_like(residual, bool)
    heat = heat_map(residual, region, STRONG_POST)
    assert heat[5, 5] == 0.0
    assert heat[25, 25] == pytest.approx(0.5)
    assert heat[blob].mean() > 0.4


def test_heat_map_is_zero_outside_the_region_even_after_filtering():
    residual = np.ones((20, 20), np.float32)
    region = np.zeros((20, 20), bool)
    region[5:15, 5:15] = True
    heat = heat_map(residual, region, PAPER_POST)  # includes a Gaussian blur that would leak out
    assert heat[~region].max() == 0.0
    assert heat[region].max() > 0


def test_paper_relative_floor_drops_changes_under_30_percent_of_the_maximum():
    residual = np.zeros((10, 10), np.float32)
    residual[2:4, 2:4] = 1.0
    residual[6:8, 6:8] = 0.25  # under 30 % of the max: discarded
    post = PAPER_POST.__class__(median_size=1, relative_floor=0.3, blur_sigma=0.0)
    heat = heat_map(residual, np.ones_like(residual, bool), post)
    assert heat[6:8, 6:8].max() == 0.0 and heat[2:4, 2:4].min() == 1.0


def test_otsu_binarization_separates_a_lesion_from_quiet_tissue():
    rng = np.random.default_rng(3)
    heat = np.abs(rng.normal(0, 0.01, (64, 64))).astype(np.float32)
    lesion = _disc((64, 64), (30, 34), 6)
    heat[lesion] += 0.3
    region = np.ones_like(heat, bool)
    binary, t = binarize(heat, region, "otsu")
    assert 0.02 < t < 0.3
    assert np.array_equal(binary, lesion)


def test_otsu_on_a_constant_map_selects_nothing():
    binary, _ = binarize(np.full((8, 8), 0.2, np.float32), np.ones((8, 8), bool), "otsu")
    assert not binary.any()


def test_fixed_threshold_is_strict_and_small_components_are_dropped():
    heat = np.zeros((30, 30), np.float32)
    heat[2:4, 2:4] = 0.9  # 4 px: below min_component_px
    heat[10:20, 10:20] = 0.5
    heat[25, 25] = 0.4  # equal to the threshold: not selected (strict >)
    binary, t = binarize(heat, np.ones_like(heat, bool), "fixed", 0.4, min_component_px=20)
    assert t == 0.4
    assert binary.sum() == 100 and binary[10:20, 10:20].all()


def test_fixed_and_percentile_modes_need_a_threshold():
    with pytest.raises(ValueError, match="needs a threshold"):
        binarize(np.zeros((4, 4)), np.ones((4, 4), bool), "percentile")
    with pytest.raises(ValueError, match="threshold mode"):
        binarize(np.zeros((4, 4)), np.ones((4, 4), bool), "median", 0.1)


def test_percentile_calibration_gives_the_requested_healthy_false_positive_rate():
    rng = np.random.default_rng(7)
    healthy = [rng.random((50, 50)).astype(np.float32) for _ in range(4)]
    regions = [np.ones((50, 50), bool)] * 4
    t = calibrate_percentile(healthy, regions, 99.0)
    fpr = np.mean([(h > t).mean() for h in healthy])
    assert fpr == pytest.approx(0.01, abs=0.002)


def test_percentile_calibration_ignores_pixels_outside_the_regions():
    heat = np.zeros((10, 10), np.float32)
    heat[0, :] = 100.0  # skin-line artefacts outside the region
    region = np.ones((10, 10), bool)
    region[0, :] = False
    assert calibrate_percentile([heat], [region], 99.0) == 0.0


def test_overlay_keeps_the_image_where_there_is_no_heat_and_outlines_the_mask():
    img = np.full((20, 20), 0.4, np.float32)
    heat = np.zeros_like(img)
    binary = np.zeros((20, 20), bool)
    binary[5:15, 5:15] = True
    heat[binary] = 1.0
    rgb = overlay(img, heat, binary)
    assert rgb.shape == (20, 20, 3)
    np.testing.assert_allclose(rgb[0, 0], [0.4, 0.4, 0.4], atol=1e-6)
    np.testing.assert_allclose(rgb[5, 5], [1.0, 1.0, 0.0])  # outline
    assert rgb[10, 10, 0] > rgb[10, 10, 1]  # heat drawn red inside


def test_postprocess_scales_with_the_map_resolution():
    big = STRONG_POST.scaled(4)
    assert big.erode_px == 40 and big.min_component_px == 320 and big.median_size % 2 == 1
