"""Preprocessed images on disk as memory-mapped .npy files, so training epochs never re-decode DICOM.

An entry is keyed by the source's resolved path, its mtime and size, and the preprocessing config
(``PreprocessConfig.key()``): editing a file or changing a parameter makes a new entry, never a
stale hit. Each entry is ``<key>.image.npy`` (float32), ``<key>.mask.npy`` (bool) and ``<key>.json``
(metadata), written atomically with the JSON last, so a crash mid-write leaves no half entry that
could be read. Several processes (accelerate ranks) may fill the same cache: the worst case is the
same entry written twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import BadInputError, MammogenError
from models.imaging.files import atomic_write, write_npy
from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig, preprocess_file
from training.datasets import MammoImage


@dataclass(frozen=True)
class CacheEntry:
    key: str
    image: np.ndarray  # read-only memmap, float32 H x W
    mask: np.ndarray  # read-only memmap, bool H x W
    meta: dict[str, Any]


class PreprocessCache:
    """A folder of preprocessed images; ``get(path)`` preprocesses on a miss and memory-maps on a hit."""

    def __init__(self, root: str | os.PathLike[str], config: PreprocessConfig = DEFAULT_PREPROCESS) -> None:
        self.root = Path(root)
        self.config = config
        self.hits = 0
        self.misses = 0

    def key(self, path: str | os.PathLike[str]) -> str:
        p = Path(path).resolve()
        st = p.stat()
        ident = json.dumps([str(p), st.st_mtime_ns, st.st_size, self.config.key()])
        return hashlib.sha256(ident.encode()).hexdigest()[:32]

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        base = self.root / key[:2] / key
        return base.with_suffix(".image.npy"), base.with_suffix(".mask.npy"), base.with_suffix(".json")

    def contains(self, path: str | os.PathLike[str]) -> bool:
        return self._paths(self.key(path))[2].is_file()

    def get(self, path: str | os.PathLike[str]) -> CacheEntry:
        key = self.key(path)
        image_path, mask_path, meta_path = self._paths(key)
        if meta_path.is_file():
            try:
                entry = CacheEntry(
                    key,
                    np.load(image_path, mmap_mode="r"),
                    np.load(mask_path, mmap_mode="r"),
                    json.loads(meta_path.read_text()),
                )
                self.hits += 1
                return entry
            except (OSError, ValueError):
                meta_path.unlink(missing_ok=True)  # damaged entry: rebuild it below
        pre = preprocess_file(path, self.config)
        meta = {
            **pre.meta(),
            "source": str(Path(path).resolve()),
            "preprocess": self.config.to_dict(),
            "shape": list(pre.image.shape),
        }
        write_npy(image_path, pre.image.astype(np.float32))
        write_npy(mask_path, pre.mask.astype(bool))
        atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        self.misses += 1
        return CacheEntry(key, np.load(image_path, mmap_mode="r"), np.load(mask_path, mmap_mode="r"), meta)

    def fill(
        self, paths: Iterable[str | os.PathLike[str]], workers: int = 1
    ) -> tuple[list[Path], list[tuple[Path, str]]]:
        """Preprocess every path once; unreadable files are returned with the reason, not raised.

        ``workers > 1`` decodes in that many processes (decoding dominates: ~1 s per full-field
        DICOM); entries are written atomically, so processes never see each other's partial files.
        """
        paths = [Path(p) for p in paths]
        if workers > 1 and len(paths) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                reasons = list(pool.map(_fill_one, [(self.root, self.config, p) for p in paths], chunksize=4))
        else:
            reasons = [_fill_one((self.root, self.config, p), self) for p in paths]
        ok = [p for p, reason in zip(paths, reasons, strict=True) if reason is None]
        failed = [(p, reason) for p, reason in zip(paths, reasons, strict=True) if reason is not None]
        return ok, failed


def _fill_one(job: tuple[Path, PreprocessConfig, Path], cache: PreprocessCache | None = None) -> str | None:
    """Make one entry; the reason it failed, or None. Top-level so worker processes can run it."""
    root, config, path = job
    cache = cache or PreprocessCache(root, config)
    try:
        cache.get(path)
    except MammogenError as exc:
        return exc.message
    except OSError as exc:  # vanished or unreadable since indexing
        return f"{type(exc).__name__}: {exc}"
    return None


class CachedImages:
    """The training ``ImageSet`` over a list of files, served from a PreprocessCache (memmapped)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], cache: PreprocessCache) -> None:
        if not paths:
            raise BadInputError("no training images")
        self.paths = [Path(p) for p in paths]
        self.cache = cache

    @classmethod
    def from_index(
        cls,
        index_csv: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        config: PreprocessConfig = DEFAULT_PREPROCESS,
        views: Sequence[str] | None = None,
    ) -> CachedImages:
        """Images listed by ``mammogen ingest`` (optionally only some views, e.g. ("CC", "MLO"))."""
        from training.ingest import read_index

        rows = read_index(index_csv)
        if views is not None:
            rows = [r for r in rows if (r.get("view") or "") in views]
        return cls([r["path"] for r in rows], PreprocessCache(cache_dir, config))

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> MammoImage:
        entry = self.cache.get(self.paths[index])
        return MammoImage(image=entry.image, mask=entry.mask, meta=entry.meta)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "preprocessed folder (memory-mapped cache)",
            "images": len(self.paths),
            "preprocess": self.cache.config.to_dict(),
        }
