"""PSNR/SSIM against hand-computed values, and the bicubic baseline helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics.image_quality import bicubic_upsample, downsample_area, psnr, ssim


def test_psnr_of_a_constant_error_of_one_tenth_is_20_db():
    a = np.full((8, 8), 0.5)
    assert psnr(a + 0.1, a) == pytest.approx(20.0)


def test_psnr_of_identical_images_is_infinite():
    a = np.random.default_rng(0).random((8, 8))
    assert psnr(a, a) == math.inf


def test_psnr_mask_ignores_pixels_outside_it():
    a = np.zeros((4, 4))
    b = a.copy()
    b[0, 0] = 1.0  # a large error outside the mask
    b[3, 3] = 0.01
    mask = np.zeros((4, 4), bool)
    mask[2:, 2:] = True
    assert psnr(b, a, mask=mask) == pytest.approx(10 * math.log10(1 / (0.01**2 / 4)))


def test_ssim_of_two_constant_images_is_the_luminance_term():
    a, b = 0.5, 0.6
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # contrast/structure term is C2/C2 = 1
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(expected, rel=1e-9)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    noisier = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1)
    assert ssim(a, a) == pytest.approx(1.0)
    assert 1.0 > ssim(noisy, a) > ssim(noisier, a)


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="shape"):
        ssim(np.zeros((8, 8)), np.zeros((9, 8)))


def test_downsample_area_averages_blocks():
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = downsample_area(img, 2)
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]])


def test_bicubic_upsample_keeps_constants_and_returns_the_requested_size():
    out = bicubic_upsample(np.full((8, 6), 0.3, np.float32), (32, 24))
    assert out.shape == (32, 24)
    np.testing.assert_allclose(out, 0.3, atol=1e-6)


def test_bicubic_beats_nearest_neighbour_on_a_smooth_image():
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    hi = (0.5 + 0.4 * np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy)).astype(np.float32)
    lo = downsample_area(hi, 4)
    nearest = np.repeat(np.repeat(lo, 4, 0), 4, 1)
    assert psnr(bicubic_upsample(lo, hi.shape), hi) > psnr(nearest, hi)
