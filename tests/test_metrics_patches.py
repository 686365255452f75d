"""Patch-level FID sampling: same relative location in both images, inside both breasts, chest wall aligned."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import BadInputError
from models.imaging.mask import breast_mask
from models.metrics.patches import matched_patches
from tests.metrics_images import phantom


def test_patches_of_an_image_with_itself_are_identical_and_inside_the_breast():
    img = phantom(0, (200, 180))
    out = matched_patches([img], [img], per_image=5, size=64, seed=1)
    assert len(out.real) == 5 and out.skipped_pairs == 0
    mask = breast_mask(img)
    for a, b, loc in zip(out.real, out.synthetic, out.locations, strict=True):
        assert np.array_equal(a, b)
        y, x = loc.real_box
        assert mask[y : y + 64, x : x + 64].mean() >= 0.75


def test_a_mirrored_synthetic_image_gives_the_same_patches_chest_wall_left():
    img = phantom(1, (200, 180))
    out = matched_patches([img], [img[:, ::-1].copy()], per_image=4, size=64, seed=2)
    assert len(out.real) == 4
    for a, b, loc in zip(out.real, out.synthetic, out.locations, strict=True):
        assert np.array_equal(a, b)
        assert loc.synthetic_box[1] == 180 - 64 - loc.real_box[1]


def test_different_sizes_map_by_relative_position_and_the_shorter_set_cycles():
    real = [phantom(2, (200, 160)), phantom(3, (200, 160))]
    synthetic = [phantom(4, (400, 320))]
    out = matched_patches(real, synthetic, per_image=3, size=64, seed=3)
    assert {loc.synthetic_index for loc in out.locations} == {0}
    assert {loc.real_index for loc in out.locations} == {0, 1}
    for loc in out.locations:
        (ry, rx), (sy, sx) = loc.real_box, loc.synthetic_box
        assert sy / (400 - 64) == pytest.approx(ry / (200 - 64), abs=0.01)
        assert sx / (320 - 64) == pytest.approx(rx / (160 - 64), abs=0.01)


def test_images_smaller_than_the_patch_are_bad_input():
    with pytest.raises(BadInputError, match="smaller"):
        matched_patches([phantom(0, (100, 100))], [phantom(1, (100, 100))], size=256)


def test_a_pair_without_enough_breast_is_skipped_not_padded():
    empty = np.zeros((128, 128), np.float32)
    out = matched_patches([phantom(0, (128, 128))], [empty], size=64)
    assert out.real == [] and out.skipped_pairs == 1
