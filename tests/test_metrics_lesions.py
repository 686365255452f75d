"""Lesion closed-loop metrics (models/metrics/lesions.py) on arrays whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.lesion_spec import disc, grow
from models.metrics.lesions import (
    border_ring,
    centred_crop,
    changed_area,
    equivalent_diameter,
    lesion_change,
    ring_positions,
    ring_seam,
    shifted,
    summarize,
)
from training.phantoms import power_law_noise

SHAPE = (160, 160)


def _tissue(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 + 0.05 * power_law_noise(SHAPE, 3.0, rng) + 0.01 * rng.standard_normal(SHAPE)).astype(np.float32)


def test_equivalent_diameter_of_a_disc_is_its_diameter():
    assert equivalent_diameter(disc(SHAPE, (80, 80), 15.0)) == pytest.approx(30.0, rel=0.03)
    assert equivalent_diameter(np.zeros(SHAPE, bool)) == 0.0


def test_a_flat_disc_gives_back_its_contrast_and_size():
    before = _tissue()
    lesion = disc(SHAPE, (80, 80), 12.0)
    after = before + 0.08 * lesion
    region = grow(lesion, 10.0)
    c = lesion_change(after, before, lesion, region)
    assert c.contrast == pytest.approx(0.08, abs=1e-6)
    assert c.relative_contrast == pytest.approx(0.08 / before[lesion].mean(), rel=1e-6)
    assert c.changed_diameter_px == pytest.approx(24.0, rel=0.1)
    assert c.mask_diameter_px == pytest.approx(24.0, rel=0.05)


def test_the_half_maximum_size_does_not_depend_on_the_contrast():
    before = _tissue()
    lesion = disc(SHAPE, (80, 80), 10.0)
    blob = ndimage.gaussian_filter(lesion.astype(np.float64), 3.0)
    region = grow(lesion, 15.0)
    faint = lesion_change(before + 0.03 * blob, before, lesion, region)
    bright = lesion_change(before + 0.3 * blob, before, lesion, region)
    assert faint.changed_diameter_px == pytest.approx(bright.changed_diameter_px, rel=0.05)
    assert bright.contrast == pytest.approx(10 * faint.contrast, rel=1e-6)


def test_no_positive_change_means_no_changed_area():
    before = _tissue()
    lesion = disc(SHAPE, (80, 80), 10.0)
    assert not changed_area(before - 0.05 * lesion, before, lesion, grow(lesion, 5.0)).any()
    assert lesion_change(before, before, lesion, grow(lesion, 5.0)).changed_diameter_px == 0.0


def test_the_changed_area_stays_inside_the_region():
    before = _tissue()
    lesion = disc(SHAPE, (80, 80), 10.0)
    region = grow(lesion, 4.0)
    after = before + 0.1 * disc(SHAPE, (80, 80), 30.0)  # a change far larger than the region
    assert not (changed_area(after, before, lesion, region) & ~region).any()


def test_the_border_ring_straddles_the_border():
    region = disc(SHAPE, (80, 80), 20.0)
    ring = border_ring(region, inner_px=5.0, outer_px=2.0)
    dist_in = ndimage.distance_transform_edt(region)
    dist_out = ndimage.distance_transform_edt(~region)
    assert ring[region].any() and ring[~region].any()
    assert dist_in[ring & region].max() <= 5.0 and dist_out[ring & ~region].max() <= 2.0
    assert not ring[80, 80]  # the centre is not border


def test_ring_positions_lie_wholly_inside_the_allowed_area_and_avoid_the_original():
    region = disc(SHAPE, (40, 40), 10.0)
    ring = border_ring(region, 4.0, 2.0)
    allowed = disc(SHAPE, (90, 90), 60.0) & ~grow(region, 2.0)
    shifts = ring_positions(ring, allowed, max_rings=8)
    assert 0 < len(shifts) <= 8
    assert shifts == ring_positions(ring, allowed, max_rings=8)  # deterministic
    for dy, dx in shifts:
        moved = shifted(ring, dy, dx)
        assert moved.sum() == ring.sum() and not (moved & ~allowed).any()
    assert ring_positions(ring, np.zeros(SHAPE, bool)) == []


def test_an_untouched_border_scores_about_one_and_a_hard_edit_scores_far_above():
    image = _tissue(3)
    breast = np.ones(SHAPE, bool)
    region = disc(SHAPE, (80, 80), 14.0)
    ring = border_ring(region, 4.0, 2.0)
    shifts = ring_positions(ring, breast & ~grow(region, 2.0), max_rings=16)
    assert len(shifts) >= 8
    calm = ring_seam(image, ring, shifts)
    assert 0.5 < calm.ratio < 2.0
    pasted = image + 0.1 * region  # an offset pasted in without blending: a step all along the border
    seam = ring_seam(pasted, ring, shifts)
    assert seam.ratio > 3.0 * calm.ratio
    assert np.isnan(ring_seam(image, ring, []).ratio)


def test_centred_crops_shift_inside_the_image():
    image = np.arange(100 * 80, dtype=np.float32).reshape(100, 80)
    assert centred_crop(image, (50, 40), 20)[10, 10] == image[50, 40]
    corner = centred_crop(image, (0, 0), 20)
    assert corner.shape == (20, 20) and corner[0, 0] == image[0, 0]
    assert centred_crop(image, (99, 79), 20)[-1, -1] == image[-1, -1]
    with pytest.raises(ValueError):
        centred_crop(image, (50, 40), 81)


def test_summaries_skip_nan_and_say_how_many():
    s = summarize([1.0, 2.0, 3.0, float("nan")])
    assert s["n"] == 3 and s["median"] == 2.0
    assert summarize([])["n"] == 0 and np.isnan(summarize([])["median"])
