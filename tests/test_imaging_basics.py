import numpy as np
import pytest

from models.errors import BadInputError
from models.imaging.files import atomic_write, read_png, sha256_file, write_npy, write_png16
from models.imaging.mask import breast_mask, drop_small_components
from models.intensity import IntensityMapping


def _disc(h=128, w=96, cy=64, cx=0, r=50, value=0.6):
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w), np.float32)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    img[inside] = value
    return img, inside


def test_png16_round_trip_keeps_16_bit_precision(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((37, 53)).astype(np.float32)
    p = write_png16(tmp_path / "a.png", img)
    back = read_png(p)
    assert back.shape == img.shape
    assert np.abs(back - img).max() <= 0.5 / 65535 + 1e-7


def test_npy_written_atomically_and_hash_stable(tmp_path):
    p = write_npy(tmp_path / "x.npy", np.arange(5))
    assert np.load(p).tolist() == [0, 1, 2, 3, 4]
    assert sha256_file(p) == sha256_file(p)
    assert not list(tmp_path.glob(".*.tmp"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "r.png", boom)
    assert list(tmp_path.iterdir()) == []


def test_broken_png_is_bad_input():
    with pytest.raises(BadInputError):
        read_png(b"\x89PNG\r\n\x1a\n-truncated")


def test_breast_mask_finds_the_breast_and_ignores_a_label():
    img, inside = _disc()
    img[5:10, 80:90] = 1.0  # a burned-in marker, separate from the breast
    mask = breast_mask(img)
    iou = (mask & inside).sum() / (mask | inside).sum()
    assert iou > 0.9
    assert not mask[5:10, 80:90].any()


def test_breast_mask_of_constant_image_is_empty():
    assert not breast_mask(np.full((32, 32), 0.3, np.float32)).any()


def test_drop_small_components_removes_specks():
    b = np.zeros((20, 20), bool)
    b[1, 1] = True
    b[5:10, 5:10] = True
    out = drop_small_components(b, 4)
    assert not out[1, 1] and out[5:10, 5:10].all()


def test_intensity_mapping_round_trip_and_manifest_dict():
    m = IntensityMapping(raw_window="percentile", lo_percentile=1, hi_percentile=99)
    assert IntensityMapping.from_dict(m.to_dict()) == m
    x = np.linspace(0, 1, 11, dtype=np.float32)
    assert np.allclose(m.from_model(m.to_model(x)), x)
    raw = np.arange(100, dtype=np.uint16).reshape(10, 10)
    out = m.normalize_raw(raw)
    assert out.min() == 0.0 and out.max() == 1.0
