"""``mammogen ingest DIR --out index.csv``: index a folder of DICOM/PNG/TIFF mammograms for training.

Unreadable files are listed with the reason in ``<index>.errors.csv`` (or ``--errors``) and skipped;
label masks (``x_mask.png`` beside ``x.png``) are linked to their image, not indexed as images;
the command exits 0 unless the folder itself cannot be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.errors import BadInputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="folder tree of DICOM / PNG / TIFF files (any extension)")
    parser.add_argument("--out", type=Path, required=True, help="index CSV to write")
    parser.add_argument("--errors", type=Path, default=None, help="errors CSV (default: <out>.errors.csv)")
    parser.add_argument(
        "--decode", action="store_true", help="decode every image (slow; also catches corrupt compressed data)"
    )
    parser.add_argument("--max-side", type=int, default=None, help="refuse images with a longer side (px)")
    parser.add_argument("--workers", type=int, default=1, help="processes (worth it with --decode)")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip names/relative paths matching (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    from training.ingest import INGEST_MAX_SIDE, index_folder

    if not args.folder.is_dir():
        raise BadInputError(f"not a folder: {args.folder}")
    report = index_folder(
        args.folder,
        args.out,
        args.errors,
        decode=args.decode,
        max_side=args.max_side or INGEST_MAX_SIDE,
        workers=max(1, args.workers),
        exclude=tuple(args.exclude),
    )
    views = ", ".join(f"{k}: {v}" for k, v in sorted(report.by_view.items())) or "none"
    print(f"indexed {report.indexed} images ({views}) -> {report.index_path}")
    print(f"linked {report.label_masks} label masks (*_mask) to their images (column label_mask)")
    print(f"skipped {report.failed} unreadable files -> {report.errors_path}")
    return 0
