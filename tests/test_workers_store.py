"""The result store writes atomically, records size + sha256, refuses path tricks and expires old jobs."""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest

from models.errors import JobNotFoundError
from workers.store import ResultStore


def test_written_files_are_recorded_with_their_size_and_sha256(tmp_path):
    store = ResultStore(tmp_path)
    image = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    for rec in (store.write_png16("j1", "a.png", image), store.write_npy("j1", "a.npy", image)):
        path = store.path_of("j1", rec.name)
        data = path.read_bytes()
        assert rec.size == len(data) and rec.sha256 == hashlib.sha256(data).hexdigest()
    assert store.write_png16("j1", "a.png", image).media_type == "image/png"
    assert np.allclose(np.load(store.path_of("j1", "a.npy")), image)


def test_a_failing_writer_leaves_no_file_or_temp_behind(tmp_path):
    store = ResultStore(tmp_path)

    def broken(path):
        path.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.write_with("j2", "x.dcm", broken)
    assert list(store.job_dir("j2").iterdir()) == []


@pytest.mark.parametrize(("job", "name"), [("../etc", "passwd"), ("j", "../../x"), ("j", ".hidden"), ("j/k", "a")])
def test_paths_outside_the_store_are_refused(tmp_path, job, name):
    with pytest.raises(JobNotFoundError):
        ResultStore(tmp_path).path_of(job, name)


def test_missing_result_is_not_found(tmp_path):
    with pytest.raises(JobNotFoundError):
        ResultStore(tmp_path).path_of("nojob", "a.png")


def test_cleanup_removes_only_folders_older_than_the_retention(tmp_path):
    store = ResultStore(tmp_path)
    store.write_bytes("old", "a.bin", b"1")
    store.write_bytes("new", "a.bin", b"2")
    past = time.time() - 3600
    for p in (store.job_dir("old"), store.job_dir("old") / "a.bin"):
        os.utime(p, (past, past))
    assert store.cleanup(max_age_s=600) == ["old"]
    assert not store.job_dir("old").exists() and store.path_of("new", "a.bin").is_file()
