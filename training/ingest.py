"""Index a folder tree of DICOM / PNG / TIFF files for training: one CSV row per readable image.

Every file is sniffed by content (hospital exports often have no extension); headers and
dimensions are validated without decoding pixels unless ``decode=True``. A file that cannot be
used goes to the errors CSV with the reason and the run goes on: one bad file in 100 000 must
not cost the other 99 999.

Label masks (``x_mask.png`` beside ``x.png``, the rule of ``models.preprocess``) are not images:
their path goes into their image's ``label_mask`` column; one whose image is missing is listed
in the errors CSV, never indexed as a mammogram.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from models.errors import BadInputError, MammogenError
from models.imaging.files import atomic_write
from models.imaging.readers import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, probe_image, read_image
from models.preprocess import is_label_mask, label_mask_target

INDEX_FIELDS = (
    "path",
    "format",
    "height",
    "width",
    "bits",
    "photometric",
    "laterality",
    "view",
    "modality",
    "patient_id",
    "study_uid",
    "series_uid",
    "sop_uid",
    "transfer_syntax",
    "presentation_intent",
    "pixel_spacing_mm",
    "size_bytes",
    "label_mask",
)
ERROR_FIELDS = ("path", "error", "reason")
#: Training data may be larger than what the API accepts (e.g. 5000 x 4000 px detectors).
INGEST_MAX_SIDE = 2 * DEFAULT_MAX_SIDE


@dataclass(frozen=True)
class IngestReport:
    index_path: Path
    errors_path: Path
    indexed: int
    failed: int
    by_view: dict[str, int]
    label_masks: int = 0  # linked to their images, not indexed


def iter_files(
    root: str | os.PathLike[str], exclude: set[Path] | None = None, patterns: Sequence[str] = ()
) -> Iterator[Path]:
    """Every regular file under ``root`` in a stable order, skipping hidden files and folders, the
    ``exclude`` paths and names or relative paths matching any glob in ``patterns``."""
    exclude = {p.resolve() for p in exclude or set()}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if any(fnmatch(name, pat) or fnmatch(rel, pat) for pat in patterns):
                continue
            if path.is_file() and path.resolve() not in exclude:
                yield path


def index_file(
    path: Path,
    *,
    decode: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = INGEST_MAX_SIDE,
) -> dict[str, Any]:
    """The index row of one file; raises a MammogenError (or OSError) saying why it is unusable."""
    if path.stat().st_size == 0:
        raise BadInputError("empty file")
    if decode:
        _, info = read_image(path, max_pixels=max_pixels, max_side=max_side)
    else:
        info = probe_image(path, max_pixels=max_pixels, max_side=max_side)
    row = info.to_row()
    return {**{k: row.get(k) for k in INDEX_FIELDS}, "path": str(path), "size_bytes": path.stat().st_size}


def index_folder(
    root: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    errors_csv: str | os.PathLike[str] | None = None,
    *,
    decode: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = INGEST_MAX_SIDE,
    workers: int = 1,
    exclude: Sequence[str] = (),
) -> IngestReport:
    """Write the index and the errors CSV (``<out>.errors.csv`` by default); never aborts on a file.

    Rows keep the walk's sorted order whatever ``workers`` is (processes help with ``decode``)."""
    root = Path(root)
    out_csv = Path(out_csv)
    errors_csv = Path(errors_csv) if errors_csv is not None else out_csv.with_suffix(".errors.csv")
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    paths = list(iter_files(root, {out_csv, errors_csv}, exclude))
    images, labels, orphans = split_label_masks(paths)
    jobs = [(path, decode, max_pixels, max_side) for path in images]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_index_one, jobs, chunksize=8))
    else:
        results = [_index_one(job) for job in jobs]
    for ok, result in results:
        if ok:
            result["label_mask"] = str(labels[Path(result["path"])]) if Path(result["path"]) in labels else None
        (rows if ok else errors).append(result)
    errors += [
        {"path": str(p), "error": "orphan_label_mask", "reason": "a label mask (*_mask) without its image beside it"}
        for p in orphans
    ]
    _write_csv(out_csv, INDEX_FIELDS, rows)
    _write_csv(errors_csv, ERROR_FIELDS, errors)
    by_view: dict[str, int] = {}
    for row in rows:
        key = row.get("view") or "unknown"
        by_view[key] = by_view.get(key, 0) + 1
    return IngestReport(out_csv, errors_csv, len(rows), len(errors), by_view, len(labels))


def split_label_masks(paths: Sequence[Path]) -> tuple[list[Path], dict[Path, Path], list[Path]]:
    """(image files, {image: its label mask}, label masks whose image is not among ``paths``)."""
    names: dict[Path, list[str]] = {}
    for p in paths:
        names.setdefault(p.parent, []).append(p.name)
    labels: dict[Path, Path] = {}
    orphans: list[Path] = []
    for p in paths:
        if is_label_mask(p):
            target = label_mask_target(p, names[p.parent])
            if target is None:
                orphans.append(p)
            else:
                labels[target] = p
    masks = set(labels.values()) | set(orphans)
    return [p for p in paths if p not in masks], labels, orphans


def _index_one(job: tuple[Path, bool, int | None, int | None]) -> tuple[bool, dict[str, Any]]:
    """(True, index row) or (False, error row) for one file; top-level for worker processes."""
    path, decode, max_pixels, max_side = job
    try:
        return True, index_file(path, decode=decode, max_pixels=max_pixels, max_side=max_side)
    except MammogenError as exc:
        return False, {"path": str(path), "error": exc.code, "reason": exc.message}
    except (OSError, ValueError, RuntimeError) as exc:  # permission denied, odd headers, ...
        return False, {"path": str(path), "error": type(exc).__name__, "reason": str(exc)}


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def read_index(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of an index CSV (strings; empty string where a tag was absent)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
