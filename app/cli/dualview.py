"""``mammogen dualview --bundle PATH --count N --out DIR``: CC + MLO pairs from the dual-view model.

Each pair i is written as ``pair_NNNN_<L|R>_CC.png`` / ``..._MLO.png`` (16-bit) and as two MG
DICOMs of one study and one series (``..._CC.dcm`` / ``..._MLO.dcm``, Secondary Capture marked
synthetic), the layout `mammogen evaluate dualview` reads. ``dualview.json`` in DIR and one JSON
line on stdout record the bundle, seeds, files and timings; pair i has seed ``--seed + i`` and
can be regenerated alone with ``--count 1 --seed <that seed>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.cli.common import (
    add_acceleration_arguments,
    add_deprecated_alias,
    add_sampling_arguments,
    load_accelerated,
    sampling_options,
)

FORMATS = ("png", "dicom", "rgb")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="dual-view bundle (default: the configured one)")
    parser.add_argument("--count", type=int, default=1, help="number of CC/MLO pairs")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first pair (pair i: seed + i)")
    add_sampling_arguments(
        parser,
        kind="dualview",
        steps_help="denoising steps (the paper: ddpm, 1000)",
        max_batch=8,
        max_batch_help="pairs per network call (was --batch-size)",
        stitching=False,
    )
    parser.add_argument(
        "--laterality",
        default="R",
        choices=("L", "R", "both"),
        help="laterality of the pairs; 'both' alternates R, L, R, ... (the model draws one side and mirrors)",
    )
    add_deprecated_alias(parser, "--batch-size", "--max-batch", int)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: settings, else auto)")
    add_acceleration_arguments(parser)
    parser.add_argument(
        "--format", default="png,dicom", help=f"comma list of {', '.join(FORMATS)} (rgb: 8-bit raw RGB preview)"
    )


def run(args: argparse.Namespace) -> int:
    from app.settings import get_settings
    from models.dualview import DualViewPipeline
    from models.errors import BadInputError, BundleNotFoundError
    from models.options import request_seeds

    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if not formats or formats - set(FORMATS):
        raise BadInputError(f"--format must be a comma list of {', '.join(FORMATS)}, got {args.format!r}")
    settings = get_settings()
    bundle = args.bundle or settings.bundle_path("dualview")
    if not Path(bundle).exists():
        raise BundleNotFoundError(
            f"no dual-view bundle at {bundle}; make one with `mammogen bundle create --kind dualview --preset tiny "
            "--random --out DIR` or `mammogen train dualview ...`, and pass --bundle DIR"
        )
    options = sampling_options(args, request_seeds(args.seed, args.count))
    pipe, accel = load_accelerated(DualViewPipeline, bundle, args)
    lats = ["R" if i % 2 == 0 else "L" for i in range(args.count)] if args.laterality == "both" else args.laterality
    result = pipe(options, laterality=lats)
    pairs = write_pairs(args.out, result, pipe, formats)
    summary = {
        "bundle": str(bundle),
        "model": {"name": pipe.name, "version": pipe.version},
        "acceleration": accel.label,
        "out": str(args.out),
        "count": args.count,
        "seed": args.seed,
        "pairs": pairs,
        "mean_third_channel_error": float(sum(result.third_channel_error) / args.count),
        "stats": result.stats,
    }
    from models.imaging.files import atomic_write

    atomic_write(args.out / "dualview.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    print(json.dumps(summary))
    sys.stdout.flush()
    return 0


def write_pairs(out: Path, result: Any, pipe: Any, formats: set[str]) -> list[dict[str, Any]]:
    """Write every pair of a DualViewResult under ``out``; returns one record per pair."""
    from models.imaging.files import write_png8, write_png16

    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (cc, mlo, lat, seed) in enumerate(zip(result.cc, result.mlo, result.laterality, result.seeds, strict=True)):
        stem = f"pair_{i:04d}_{lat}" if lat else f"pair_{i:04d}"
        rec: dict[str, Any] = {
            "index": i,
            "seed": seed,
            "laterality": lat,
            "third_channel_error": round(result.third_channel_error[i], 6),
        }
        if "png" in formats:
            rec["cc_png"] = str(write_png16(out / f"{stem}_CC.png", cc))
            rec["mlo_png"] = str(write_png16(out / f"{stem}_MLO.png", mlo))
        if "dicom" in formats:
            from models.imaging.dicom_write import write_dualview_pair

            cc_dcm, mlo_dcm = write_dualview_pair(
                out,
                cc,
                mlo,
                laterality=lat or "R",
                model_name=f"mammogen dual-view {pipe.name}",
                model_version=pipe.version or "unversioned",
                seed=seed,
                names=(f"{stem}_CC.dcm", f"{stem}_MLO.dcm"),
            )
            rec["cc_dcm"], rec["mlo_dcm"] = str(cc_dcm), str(mlo_dcm)
        if "rgb" in formats:
            rec["rgb_png"] = str(write_png8(out / f"{stem}_rgb.png", result.rgb[i].transpose(1, 2, 0)))
        records.append(rec)
    return records
