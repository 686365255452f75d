"""Paper §8-9 preprocessing, one test per step, then the whole chain on phantom DICOMs and PNGs."""

from __future__ import annotations

import numpy as np
import pytest

from models.imaging.files import write_png16
from models.intensity import IntensityMapping
from models.preprocess import (
    PreprocessConfig,
    breast_box,
    crop_to_breast,
    face_left,
    is_inverted,
    normalize,
    preprocess_file,
    preprocess_image,
    segment,
    zero_background,
)
from tests.imaging_support import phantom_dicom
from training.phantoms import make_phantom_case

SIZE = (112, 96)


@pytest.fixture(scope="module")
def cases():
    return make_phantom_case(21, SIZE, laterality="L"), make_phantom_case(21, SIZE, laterality="R")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_negative_images_are_detected_and_inverted_back(cases):
    image = cases[0].cc.image
    assert not is_inverted(image) and is_inverted(1.0 - image)
    negative, positive = preprocess_image(1.0 - image), preprocess_image(image)
    assert negative.inverted and not positive.inverted
    np.testing.assert_allclose(negative.image, positive.image, atol=1e-5)
    kept = preprocess_image(1.0 - image, config=PreprocessConfig(fix_inverted=False))
    assert not kept.inverted and not np.allclose(kept.image, positive.image, atol=1e-2)


def test_segmentation_recovers_the_phantom_breast(cases):
    for view in cases[0].views:
        assert _iou(segment(view.image), view.breast_mask) > 0.95


def test_background_is_zeroed_and_the_breast_untouched(cases):
    view = cases[0].mlo
    mask = segment(view.image)
    out = zero_background(view.image, mask)
    assert (out[~mask] == 0).all() and np.array_equal(out[mask], view.image[mask])


def test_right_breasts_are_flipped_to_face_left_with_their_masks(cases):
    left, right = cases
    mask = segment(right.cc.image)
    image, flipped_mask, orientation = face_left(right.cc.image, mask)
    assert orientation.flipped
    np.testing.assert_array_equal(image, left.cc.image)
    assert _iou(flipped_mask, left.cc.breast_mask) > 0.95


def test_intensity_mapping_stretches_the_breast_to_unit_range(cases):
    view = cases[0].cc
    mask = segment(view.image)
    minmax = normalize(view.image, mask)
    assert minmax[mask].min() == 0.0 and minmax[mask].max() == 1.0 and (minmax[~mask] == 0).all()
    pct = normalize(view.image, mask, PreprocessConfig(intensity=IntensityMapping(raw_window="percentile")))
    assert (pct[mask] == 1.0).mean() >= 0.004  # the top 0.5 % saturate
    assert np.corrcoef(minmax[mask], pct[mask])[0, 1] > 0.99


def test_crop_keeps_the_whole_breast_in_a_tight_box(cases):
    view = cases[0].cc
    mask = view.breast_mask
    image, cropped_mask, (y, x, h, w) = crop_to_breast(view.image, mask, margin=2)
    assert cropped_mask.sum() == mask.sum() and image.shape == (h, w)
    assert x == 0 and cropped_mask[:, 0].any()  # chest wall stays at column 0
    y0, x0, h0, w0 = breast_box(mask)
    assert y == max(0, y0 - 2) and y + h == min(y0 + h0 + 2, SIZE[0])
    assert x0 == 0 and w == min(w0 + 2, SIZE[1])


def test_full_chain_makes_left_and_right_dicoms_of_one_breast_identical(tmp_path, cases):
    left, right = cases
    outs = []
    for case in (left, right):
        path = phantom_dicom(
            tmp_path / f"{case.laterality}.dcm", case.mlo.image, laterality=case.laterality, view="MLO", bits_stored=14
        )
        outs.append(preprocess_file(path))
    a, b = outs
    assert not a.orientation.flipped and b.orientation.flipped
    assert b.orientation.source == "patient_orientation" and b.meta()["laterality"] == "R"
    np.testing.assert_allclose(a.image, b.image, atol=1e-6)
    assert a.image[a.mask].min() == 0.0 and a.image[a.mask].max() == 1.0 and (a.image[~a.mask] == 0).all()


def test_inverted_16bit_png_goes_through_the_same_chain(tmp_path, cases):
    right = cases[1]
    path = write_png16(tmp_path / "neg.png", 1.0 - right.cc.image)
    pre = preprocess_file(path, PreprocessConfig(crop_to_breast=True))
    ref = preprocess_image(cases[0].cc.image, None, PreprocessConfig(crop_to_breast=True))
    assert pre.inverted and pre.orientation.flipped and pre.crop_box is not None
    assert pre.image.shape == ref.image.shape
    np.testing.assert_allclose(pre.image, ref.image, atol=2e-4)


def test_config_round_trips_and_its_key_changes_with_any_parameter():
    config = PreprocessConfig(crop_to_breast=True, crop_margin_px=4)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert config.key() != PreprocessConfig().key()
    assert PreprocessConfig(intensity=IntensityMapping(raw_window="percentile")).key() != PreprocessConfig().key()


def test_images_without_a_breast_are_refused_not_cached_empty():
    from models.errors import BadInputError

    with pytest.raises(BadInputError, match="no breast"):
        preprocess_image(np.zeros((64, 64), np.float32))
    speck = np.zeros((64, 64), np.float32)
    speck[5:7, 5:7] = 1.0
    with pytest.raises(BadInputError, match="no breast"):
        preprocess_image(speck)
