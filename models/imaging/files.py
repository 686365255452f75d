"""Atomic file writes, the 16-bit PNG / NPY formats and JSON of numpy values.

Every result file goes through ``atomic_write`` (temp file in the same folder + rename), so a
reader never sees half a file and a crash never leaves one behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from models.errors import BadInputError
from models.intensity import from_uint16, to_uint16


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Write a file by calling ``write(fileobj)`` on a temp file, fsync, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_png16(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Float image in [0, 1] (H x W) -> 16-bit grayscale PNG, written atomically."""
    if image.ndim != 2:
        raise ValueError(f"write_png16 expects a 2-D image, got shape {image.shape}")
    pil = Image.fromarray(to_uint16(image))

    def _write(f: BinaryIO) -> None:
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        f.write(buf.getvalue())

    return atomic_write(path, _write)


def write_png8(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Float image in [0, 1] (H x W or H x W x 3) -> 8-bit PNG, for people to look at (overlays)."""
    arr = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    pil = Image.fromarray(arr)
    return atomic_write(path, lambda f: pil.save(f, format="PNG"))


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


#: PIL modes whose raw array is not the visible picture, and what to convert them to.
_CONVERT_MODES = {"1": "L", "P": "RGB", "PA": "RGB", "LA": "L", "RGBA": "RGB"}


def read_png(path_or_bytes: str | os.PathLike[str] | bytes) -> np.ndarray:
    """8/16-bit grayscale, RGB, palette or alpha PNG/TIFF -> float32 in [0, 1] (the visible gray)."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    try:
        with Image.open(src) as im:
            im.load()
            # Palette indices, alpha channels and 1-bit packing are not the picture: convert first.
            target = _CONVERT_MODES.get(im.mode)
            pic = im.convert(target) if target else im
            arr = np.asarray(pic)
            mode = pic.mode
    except Exception as exc:  # PIL raises many types for broken files
        raise BadInputError(f"cannot read PNG/TIFF image: {exc}") from exc
    if arr.dtype == np.uint16 or mode.startswith("I;16"):
        return from_uint16(arr.astype(np.uint16))
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif mode in ("I", "F"):
        arr = arr.astype(np.float32)
        hi = float(arr.max()) if arr.size else 0.0
        arr = arr / hi if hi > 0 else arr
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=-1)
    return arr.astype(np.float32)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for reports: numpy scalars and arrays as numbers and lists, anything else
    as its text (a report never fails on a stray object)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
