"""Procedural phantoms: seeded, one breast in two views, lesions with aligned ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from training.phantoms import TEXTURE_BETA, make_phantom_case, power_law_noise

SIZE = (128, 96)


@pytest.fixture(scope="module")
def case_with_lesions():
    return make_phantom_case(3, SIZE, lesions=True, laterality="L")


def test_same_seed_gives_identical_cases_and_other_seeds_differ():
    a = make_phantom_case(5, SIZE, lesions=True)
    b = make_phantom_case(5, SIZE, lesions=True)
    c = make_phantom_case(6, SIZE, lesions=True)
    for va, vb in zip(a.views, b.views, strict=True):
        np.testing.assert_array_equal(va.image, vb.image)
        np.testing.assert_array_equal(va.lesion_mask, vb.lesion_mask)
    assert not np.array_equal(a.cc.image, c.cc.image)


def test_images_are_float_unit_range_with_dark_background(case_with_lesions):
    for v in case_with_lesions.views:
        assert v.image.dtype == np.float32 and v.image.shape == SIZE
        assert v.image.min() >= 0.0 and v.image.max() <= 1.0
        outside = ~ndimage.binary_dilation(v.breast_mask, iterations=3)
        assert v.image[outside].mean() < 0.05 < 0.25 < v.image[v.breast_mask].mean()


def test_left_breast_touches_the_left_edge_and_right_breast_is_its_mirror():
    left = make_phantom_case(9, SIZE, laterality="L")
    right = make_phantom_case(9, SIZE, laterality="R")
    for lv, rv in zip(left.views, right.views, strict=True):
        assert lv.breast_mask[:, 0].sum() > 0.3 * SIZE[0] and lv.breast_mask[:, -1].sum() == 0
        np.testing.assert_array_equal(rv.image, lv.image[:, ::-1])
        np.testing.assert_array_equal(rv.breast_mask, lv.breast_mask[:, ::-1])
        assert rv.nipple[1] == pytest.approx(SIZE[1] - 1 - lv.nipple[1])
    assert left.cc.chest_wall == "left" and right.cc.chest_wall == "right"


def test_cc_and_mlo_share_the_breast_and_only_mlo_has_a_pectoral_muscle():
    case = make_phantom_case(4, SIZE, laterality="L")
    assert not case.cc.pectoral_mask.any()
    pect = case.mlo.pectoral_mask
    assert pect.any() and pect[0, 0] and not pect[-1, 0]  # upper chest-wall corner
    # The muscle is brighter than the fatty breast next to it.
    fat = case.mlo.breast_mask & ~pect & (case.mlo.image < np.median(case.mlo.image[case.mlo.breast_mask]))
    assert case.mlo.image[pect].mean() > case.mlo.image[fat].mean() + 0.1
    # One breast: similar area and similar depth (nipple distance from the chest wall).
    area_cc, area_mlo = case.cc.breast_mask.sum(), case.mlo.breast_mask.sum()
    assert 0.6 < area_cc / area_mlo < 1.4
    assert abs(case.cc.nipple[1] - case.mlo.nipple[1]) < 0.25 * SIZE[1]


def test_lesion_masks_cover_the_inserted_signal_and_lie_inside_the_breast(case_with_lesions):
    for v in case_with_lesions.views:
        assert v.lesions and v.lesion_mask.any()
        assert not (v.lesion_mask & ~v.breast_mask).any()
        diff = v.image - v.healthy
        near = ndimage.binary_dilation(v.lesion_mask, iterations=4)
        assert diff[near].sum() > 0.85 * np.abs(diff).sum()  # the only change is at the lesions
        assert diff[v.lesion_mask].mean() > 0.02  # and it is visible: brighter than healthy tissue
        for lesion in v.lesions:
            r, c = (round(x) for x in lesion.center)
            assert near[r, c]


def test_each_lesion_keeps_its_nipple_distance_in_both_views(case_with_lesions):
    cc, mlo = case_with_lesions.cc.lesions, case_with_lesions.mlo.lesions
    assert [lesion.kind for lesion in cc] == [lesion.kind for lesion in mlo]
    for a, b in zip(cc, mlo, strict=True):
        assert abs(a.nipple_distance_px - b.nipple_distance_px) < 0.25 * max(a.nipple_distance_px, 8)


def test_healthy_cases_have_no_lesions_and_other_sizes_work():
    case = make_phantom_case(1, (160, 120))
    for v in case.views:
        assert v.lesions == () and not v.lesion_mask.any()
        np.testing.assert_array_equal(v.image, v.healthy)
        assert v.image.shape == (160, 120)


def test_texture_has_the_requested_power_law_slope():
    field = power_law_noise((256, 256), TEXTURE_BETA["CC"], np.random.default_rng(0))
    spec = np.abs(np.fft.fft2(field)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij")
    f = np.hypot(fx, fy)
    band = (f > 0.02) & (f < 0.3)
    slope = np.polyfit(np.log(f[band]), np.log(spec[band]), 1)[0]
    assert slope == pytest.approx(-TEXTURE_BETA["CC"], abs=0.15)


def test_density_controls_the_bright_tissue_fraction():
    sparse = make_phantom_case(2, SIZE, density=0.1, laterality="L")
    dense = make_phantom_case(2, SIZE, density=0.5, laterality="L")
    m = sparse.cc.breast_mask
    assert dense.cc.image[m].mean() > sparse.cc.image[m].mean() + 0.03


def test_phantoms_command_writes_mg_dicom_png_masks_and_manifest(tmp_path):
    import csv
    import json

    from app.cli.main import main
    from models.imaging.dicom import parse_dataset
    from models.imaging.files import read_png
    from models.imaging.readers import read_image

    out = tmp_path / "ph"
    rc = main(["phantoms", "--count", "2", "--out", str(out), "--lesions", "--size", "96x64", "--bits", "12"])
    assert rc == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 4 and {r["view"] for r in rows} == {"CC", "MLO"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["lesions"] is True
    by_case: dict[str, list] = {}
    for row in rows:
        ds = parse_dataset(out / row["dicom"])
        assert ds.Modality == "MG" and ds.BitsStored == 12 and ds.ViewPosition == row["view"]
        assert ds.ImageLaterality == row["laterality"] and (ds.Rows, ds.Columns) == (96, 64)
        by_case.setdefault(row["case_id"], []).append(ds)
        from_dicom, info = read_image(out / row["dicom"])
        from_png = read_png(out / row["png"])
        np.testing.assert_allclose(from_dicom, from_png, atol=1 / 4095)  # the same pixels in both formats
        assert info.view == row["view"]
        mask = read_png(out / row["lesion_mask"]) > 0.5
        assert mask.any() == (int(row["n_lesions"]) > 0)
        expected = make_phantom_case(int(row["seed"]), (96, 64), lesions=True)
        view = expected.cc if row["view"] == "CC" else expected.mlo
        np.testing.assert_array_equal(mask, view.lesion_mask)
        healthy = read_png(out / row["healthy_png"])
        assert np.abs(from_png - healthy)[~mask].mean() < np.abs(from_png - healthy)[mask].mean()
    assert {p.name for p in out.iterdir()} == {"dicom", "png", "ground_truth", "manifest.csv", "manifest.json"}
    from training.ingest import index_folder

    report = index_folder(out / "dicom", tmp_path / "index.csv")  # images only, no masks
    assert (report.indexed, report.failed, report.by_view) == (4, 0, {"CC": 2, "MLO": 2})
    for cc, mlo in by_case.values():  # one study (and series) per breast
        assert cc.StudyInstanceUID == mlo.StudyInstanceUID and cc.SeriesInstanceUID == mlo.SeriesInstanceUID
    studies = {group[0].StudyInstanceUID for group in by_case.values()}
    assert len(studies) == 2


def test_non_square_larger_phantoms_scale_their_anatomy():
    small = make_phantom_case(8, (256, 192), lesions=True, laterality="L")
    large = make_phantom_case(8, (768, 576), lesions=True, laterality="L")
    assert large.mlo.image.shape == (768, 576) and large.pixel_spacing_mm < small.pixel_spacing_mm
    # Same breast, three times the pixels: the breast covers the same fraction of the image ...
    for s, g in zip(small.views, large.views, strict=True):
        assert s.breast_mask.mean() == pytest.approx(g.breast_mask.mean(), abs=0.03)
    # ... and every lesion is three times as large in pixels.
    for s, g in zip(small.cc.lesions, large.cc.lesions, strict=True):
        assert g.diameter_px == pytest.approx(3 * s.diameter_px)
