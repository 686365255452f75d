"""The preprocessing cache: decode once, memory-map afterwards, never serve a stale entry."""

from __future__ import annotations

import os

import numpy as np
import pytest

from models.imaging.dicom_write import generate_uid
from models.preprocess import PreprocessConfig, preprocess_file
from tests.imaging_support import phantom_dicom
from training.cache import CachedImages, PreprocessCache
from training.ingest import index_folder
from training.phantoms import make_phantom_case


@pytest.fixture
def dicoms(tmp_path):
    case = make_phantom_case(40, (72, 64), laterality="R")
    study, series = generate_uid(), generate_uid()
    return [
        phantom_dicom(
            tmp_path / "src" / f"{v.view}.dcm",
            v.image,
            laterality="R",
            view=v.view,
            patient_id="PH40",
            study_uid=study,
            series_uid=series,
            instance_number=i,
        )
        for i, v in enumerate(case.views, start=1)
    ]


def test_second_read_is_a_memory_mapped_hit_equal_to_fresh_preprocessing(tmp_path, dicoms):
    cache = PreprocessCache(tmp_path / "cache")
    first = cache.get(dicoms[0])
    second = cache.get(dicoms[0])
    assert (cache.misses, cache.hits) == (1, 1)
    assert isinstance(second.image, np.memmap) and isinstance(second.mask, np.memmap)
    fresh = preprocess_file(dicoms[0])
    np.testing.assert_array_equal(second.image, fresh.image)
    np.testing.assert_array_equal(second.mask, fresh.mask)
    assert second.meta == first.meta and second.meta["orientation"]["flipped"] is True


def test_a_hit_does_not_decode_the_source_again(tmp_path, dicoms, monkeypatch):
    cache = PreprocessCache(tmp_path / "cache")
    cache.get(dicoms[0])
    import training.cache as module

    def _fail(*args, **kwargs):
        raise AssertionError("decoded on a cache hit")

    monkeypatch.setattr(module, "preprocess_file", _fail)
    assert cache.get(dicoms[0]).image.shape == (72, 64)


def test_changed_file_or_config_makes_a_new_entry(tmp_path, dicoms):
    cache = PreprocessCache(tmp_path / "cache")
    key = cache.key(dicoms[0])
    stat = os.stat(dicoms[0])
    os.utime(dicoms[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache.key(dicoms[0]) != key and not cache.contains(dicoms[0])
    cropped = PreprocessCache(tmp_path / "cache", PreprocessConfig(crop_to_breast=True))
    assert cropped.key(dicoms[0]) != cache.key(dicoms[0])
    assert cropped.get(dicoms[0]).image.shape != cache.get(dicoms[0]).image.shape


def test_damaged_entry_is_rebuilt(tmp_path, dicoms):
    cache = PreprocessCache(tmp_path / "cache")
    entry = cache.get(dicoms[1])
    image_path = next((tmp_path / "cache").rglob(f"{entry.key}.image.npy"))
    image_path.write_bytes(b"garbage")
    again = cache.get(dicoms[1])
    assert cache.misses == 2 and again.image.shape == entry.image.shape


def test_cached_images_from_an_index_serve_training_items(tmp_path, dicoms):
    index = tmp_path / "index.csv"
    index_folder(tmp_path / "src", index)
    images = CachedImages.from_index(index, tmp_path / "cache", views=("CC", "MLO"))
    assert len(images) == 2
    items = [images.get(i) for i in range(2)]
    assert {item.meta["view"] for item in items} == {"CC", "MLO"}
    for item in items:
        assert item.image.dtype == np.float32 and item.mask.dtype == bool
        assert item.mask[:, 0].any() and not item.mask[:, -1].any()  # chest wall on the left
        assert item.meta["patient_id"] == "PH40" and item.meta["laterality"] == "R"
    from training.datasets import find_pairs

    assert len(find_pairs(images)) == 1  # CC + MLO of one breast pair up for the dual-view model
    assert images.describe()["images"] == 2


def test_fill_lists_unusable_files_and_keeps_the_good_ones(tmp_path, dicoms):
    text = tmp_path / "src" / "notes.txt"
    text.write_text("not an image")
    cache = PreprocessCache(tmp_path / "cache")
    ok, failed = cache.fill([*dicoms, text, tmp_path / "src" / "deleted.dcm"])
    assert ok == list(dicoms)
    assert [path.name for path, _ in failed] == ["notes.txt", "deleted.dcm"]
    assert "unrecognised" in failed[0][1] and "FileNotFoundError" in failed[1][1]


def test_parallel_fill_makes_the_same_entries_as_a_serial_one(tmp_path, dicoms):
    serial, parallel = PreprocessCache(tmp_path / "a"), PreprocessCache(tmp_path / "b")
    bad = tmp_path / "src" / "bad.dcm"
    bad.write_bytes(b"DICM but not really")
    paths = [*dicoms, bad]
    assert serial.fill(paths) == parallel.fill(paths, workers=2)
    for path in dicoms:
        np.testing.assert_array_equal(serial.get(path).image, parallel.get(path).image)
    assert parallel.hits == len(dicoms)  # the worker processes filled the shared folder
