"""Chest wall to the left and back: from tags when they say so, else from the image itself."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from models.imaging.dicom_write import write_synthetic_dicom
from models.imaging.orientation import Orientation, canonicalize, detect_orientation, restore, side_from_content
from models.imaging.readers import read_image
from tests.imaging_support import phantom_dicom
from training.phantoms import make_phantom_case

SIZE = (96, 80)


@pytest.fixture(scope="module")
def pair():
    return make_phantom_case(12, SIZE, laterality="L"), make_phantom_case(12, SIZE, laterality="R")


def test_content_finds_the_chest_wall_of_both_views_and_both_sides(pair):
    left, right = pair
    for lv, rv in zip(left.views, right.views, strict=True):
        assert side_from_content(lv.image) == "left"
        assert side_from_content(rv.image) == "right"


def test_canonicalize_mirrors_right_breasts_onto_left_ones_and_restore_undoes_it(pair):
    left, right = pair
    canon, orient = canonicalize(right.mlo.image)
    assert orient.flipped and orient.source == "content" and orient.laterality == "R"
    np.testing.assert_array_equal(canon, left.mlo.image)
    np.testing.assert_array_equal(restore(canon, orient), right.mlo.image)
    same, orient_l = canonicalize(left.cc.image)
    assert not orient_l.flipped
    np.testing.assert_array_equal(same, left.cc.image)
    rgb = np.stack([right.cc.image] * 3, axis=-1)  # H x W x C outputs restore the same way
    np.testing.assert_array_equal(restore(rgb, orient)[..., 0], right.cc.image[:, ::-1])


def test_patient_orientation_tag_wins_over_content(tmp_path, pair):
    left, _ = pair
    # A left-breast image whose writer says the chest wall is on the right (rows run posterior).
    path = write_synthetic_dicom(
        tmp_path / "x.dcm",
        left.cc.image,
        model_name="m",
        model_version="1",
        laterality="L",
        view="CC",
        chest_wall="right",
    )
    image, info = read_image(path)
    orient = detect_orientation(image, info)
    assert (orient.chest_wall, orient.source) == ("right", "patient_orientation")


def test_phantom_dicoms_of_right_breasts_come_out_canonical(tmp_path, pair):
    left, right = pair
    path = phantom_dicom(tmp_path / "r.dcm", right.cc.image, laterality="R", view="CC", bits_stored=16)
    image, info = read_image(path)
    canon, orient = canonicalize(image, info)
    assert orient.flipped and orient.laterality == "R"
    np.testing.assert_allclose(canon, left.cc.image, atol=1 / 65535)


def test_laterality_tag_decides_when_the_image_is_ambiguous():
    flat = np.zeros((64, 64), np.float32)
    flat[16:48, 16:48] = 0.8  # a centred blob touching neither edge
    ds = Dataset()
    ds.ImageLaterality = "R"
    assert detect_orientation(flat, ds) == Orientation("right", "laterality", "R")
    assert detect_orientation(flat) == Orientation("left", "default", None)


def test_orientation_round_trips_through_json_dicts():
    o = Orientation("right", "content", "R")
    assert Orientation.from_dict(o.to_dict()) == o and o.to_dict()["flipped"] is True
