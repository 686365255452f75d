"""The result store: a directory (a shared volume when API and workers run on several hosts).

Images never go through Redis. A job writes its files here atomically (temp file + rename, via
`models.imaging.files`) and returns only a small manifest: file name, media type, size, sha256.
Uploads wait here too, under ``uploads/<job id>/``, until the worker reads them.
Layout::

    <root>/jobs/<job id>/<file>        results
    <root>/uploads/<job id>/input.<ext> validated uploads (and mask-NN.<ext>, lesion masks)
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from models.errors import JobNotFoundError
from models.imaging.files import atomic_write, sha256_file, write_npy, write_png8, write_png16

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

MEDIA_TYPES = {
    ".png": "image/png",
    ".npy": "application/x-npy",
    ".dcm": "application/dicom",
    ".json": "application/json",
}


@dataclass(frozen=True)
class ResultFile:
    """One file of a job's result, as recorded in the job record."""

    name: str
    media_type: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, str | int]:
        return asdict(self)


def _check_name(name: str, what: str) -> str:
    if not _SAFE_NAME.match(name) or ".." in name:
        raise JobNotFoundError(f"no such {what}: {name!r}")
    return name


class ResultStore:
    """Files of results and pending uploads under one root; every path is checked against traversal."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    # paths -------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / _check_name(job_id, "job")

    def upload_dir(self, job_id: str) -> Path:
        return self.root / "uploads" / _check_name(job_id, "job")

    def path_of(self, job_id: str, name: str) -> Path:
        """The path of an existing result file; JobNotFoundError if it is missing or expired."""
        path = self.job_dir(job_id) / _check_name(name, "result file")
        if not path.is_file():
            raise JobNotFoundError(f"job {job_id} has no result file {name!r} (expired or never written)")
        return path

    # writing ------------------------------------------------------------------------------
    def record(self, path: Path) -> ResultFile:
        """The manifest entry of a file already written (atomically) into a job folder."""
        media = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return ResultFile(path.name, media, path.stat().st_size, sha256_file(path))

    def write_png16(self, job_id: str, name: str, image: np.ndarray) -> ResultFile:
        return self.record(write_png16(self.job_dir(job_id) / _check_name(name, "file"), image))

    def write_png8(self, job_id: str, name: str, image: np.ndarray) -> ResultFile:
        """8-bit (gray or RGB) PNG, for images people look at (overlays)."""
        return self.record(write_png8(self.job_dir(job_id) / _check_name(name, "file"), image))

    def write_npy(self, job_id: str, name: str, array: np.ndarray) -> ResultFile:
        return self.record(write_npy(self.job_dir(job_id) / _check_name(name, "file"), array))

    def write_bytes(self, job_id: str, name: str, data: bytes) -> ResultFile:
        path = atomic_write(self.job_dir(job_id) / _check_name(name, "file"), lambda f: f.write(data))
        return self.record(path)

    def write_with(self, job_id: str, name: str, writer: Callable[[Path], object]) -> ResultFile:
        """For writers that take a path (DICOM): write a hidden temp name, then rename into place."""
        final = self.job_dir(job_id) / _check_name(name, "file")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            writer(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return self.record(final)

    def save_upload(self, job_id: str, src: BinaryIO, suffix: str, stem: str = "input") -> Path:
        """Copy an already validated upload (the input, or a lesion mask) into the store for the worker to read."""
        path = self.upload_dir(job_id) / _check_name(f"{stem}{suffix}", "upload")
        src.seek(0)
        return atomic_write(path, lambda f: shutil.copyfileobj(src, f, 1 << 20))

    def upload_path(self, job_id: str, filename: str) -> Path:
        path = self.upload_dir(job_id) / _check_name(filename, "upload")
        if not path.is_file():
            raise JobNotFoundError(f"the upload of job {job_id} is gone (expired or deleted)")
        return path

    # retention ----------------------------------------------------------------------------
    def delete_upload(self, job_id: str) -> None:
        """A finished job's input is not needed any more (its results are)."""
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)

    def cleanup(self, max_age_s: float, now: float | None = None) -> list[str]:
        """Delete job and upload folders not modified for ``max_age_s``; returns the job ids removed."""
        now = time.time() if now is None else now
        removed: list[str] = []
        for area in ("jobs", "uploads"):
            base = self.root / area
            if not base.is_dir():
                continue
            for entry in base.iterdir():
                try:
                    newest = max([entry.stat().st_mtime] + [p.stat().st_mtime for p in entry.rglob("*")])
                except FileNotFoundError:
                    continue
                if now - newest > max_age_s:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return sorted(set(removed))
