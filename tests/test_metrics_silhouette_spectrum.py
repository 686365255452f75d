"""Silhouette figures (stage-1 gate) and radial power spectra (super-resolution gate)."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics.image_quality import bicubic_upsample, downsample_area
from models.metrics.silhouette import SilhouetteRule, silhouette
from models.metrics.spectrum import radial_power_spectrum, spectrum_distance
from training.demo import phantom_images


def _breast(h: int = 64, w: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (((yy - h / 2) / (h * 0.45)) ** 2 + (xx / (w * 0.8)) ** 2 < 1).astype(np.float32) * 0.7


def test_preprocessed_phantoms_are_one_breast_against_the_chest_wall_on_black():
    images = phantom_images(4, seed=3, size=(128, 96))
    refs = [images.get(i).image for i in range(len(images))]
    rule = SilhouetteRule((0.05, 0.95))
    for r in refs:
        assert rule.failures(silhouette(r)) == []


def test_each_failure_kind_is_named():
    rule = SilhouetteRule((0.2, 0.6))
    good = _breast()
    assert rule.failures(silhouette(good)) == []
    two = good.copy()
    two[5:15, 35:45] = 0.8  # a second blob
    assert any("components" in f for f in rule.failures(silhouette(two)))
    grey = np.where(good > 0, good, 0.3).astype(np.float32)  # grey background: one huge component
    assert rule.failures(silhouette(grey))
    noisy = good + (np.random.default_rng(0).random(good.shape) < 0.1) * (good == 0) * 0.5
    assert any("background" in f for f in rule.failures(silhouette(noisy.astype(np.float32))))
    mirrored = good[:, ::-1].copy()  # chest wall on the right
    assert any("chest wall" in f for f in rule.failures(silhouette(mirrored)))
    assert any("area" in f for f in rule.failures(silhouette(np.zeros_like(good))))


def test_area_range_comes_from_reference_percentiles():
    small, big = _breast(), _breast()
    big[:, :40] = np.where(big[:, :40] > 0, big[:, :40], 0.7)
    rule = SilhouetteRule.from_references([small, big], percentiles=(0, 100))
    assert rule.area_range == pytest.approx((silhouette(small).area_fraction, silhouette(big).area_fraction))


def test_blurring_loses_high_frequency_power_and_the_distance_sees_it():
    rng = np.random.default_rng(0)
    texture = rng.random((128, 128)).astype(np.float32)
    blurred = bicubic_upsample(downsample_area(texture, 4), (128, 128))
    f, p = radial_power_spectrum(texture)
    _, q = radial_power_spectrum(blurred)
    high = f > 0.3
    assert f.min() > 0 and f.max() < 0.5
    assert q[high].mean() < 0.1 * p[high].mean()
    assert spectrum_distance(texture, texture) == 0.0
    assert spectrum_distance(blurred, texture) > 1.0  # more than a factor of 10
