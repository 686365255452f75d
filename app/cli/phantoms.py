"""``mammogen phantoms``: write seeded procedural CC/MLO phantoms as MG DICOM and 16-bit PNG.

Layout: ``OUT/dicom/<case>/<L|R>_<CC|MLO>.dcm``, ``OUT/png/<case>/...png`` (16-bit) and, with
``--lesions``, ``OUT/ground_truth/<case>/..._lesions.png`` (masks) and ``..._healthy.png`` (the same
acquisition without lesions), plus ``OUT/manifest.csv`` / ``OUT/manifest.json`` describing every
view. Images and ground truth live in separate trees so ``mammogen ingest OUT/dicom`` (or
``OUT/png``) indexes training images only. One study per breast: both views
of a case share a StudyInstanceUID and a SeriesInstanceUID. The same command with the same seed
writes the same pixels (UIDs and dates differ).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

from models.errors import BadInputError

FORMATS = ("dicom", "png")
MANIFEST_FIELDS = (
    "case_id",
    "seed",
    "laterality",
    "view",
    "height",
    "width",
    "density",
    "bits_stored",
    "pixel_spacing_mm",
    "dicom",
    "png",
    "lesion_mask",
    "healthy_png",
    "n_lesions",
    "lesion_kinds",
    "patient_id",
    "study_uid",
    "series_uid",
)


def parse_size(text: str) -> tuple[int, int]:
    """'256x192' or '256' -> (height, width)."""
    try:
        parts = [int(p) for p in text.lower().replace("*", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 256x256, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 32 or max(parts) > 8192:
        raise argparse.ArgumentTypeError(f"size must be HxW with sides in 32..8192, got {text!r}")
    return parts[0], parts[1]


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise argparse.ArgumentTypeError(f"--format takes a comma list of {', '.join(FORMATS)}, got {text!r}")
    return formats


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, required=True, help="number of breasts (each gives CC + MLO)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--lesions", action="store_true", help="insert masses and calcifications (+ masks)")
    parser.add_argument("--size", type=parse_size, default=(256, 256), help="HxW, default 256x256")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed+i")
    parser.add_argument("--format", type=parse_formats, default=FORMATS, help="dicom,png (default both)")
    parser.add_argument("--bits", type=int, default=14, help="DICOM BitsStored, 12..16 (default 14)")
    parser.add_argument("--laterality", choices=("L", "R", "random"), default="random")


def run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise BadInputError("--count must be at least 1")
    if not 12 <= args.bits <= 16:
        raise BadInputError("--bits must be in 12..16")
    result = write_phantoms(
        args.out,
        count=args.count,
        seed=args.seed,
        size=args.size,
        lesions=args.lesions,
        formats=args.format,
        bits_stored=args.bits,
        laterality=None if args.laterality == "random" else args.laterality,
    )
    print(f"wrote {len(result)} views of {args.count} phantom breasts to {args.out} (manifest.csv, manifest.json)")
    return 0


def write_phantoms(
    out: Path,
    *,
    count: int,
    seed: int = 0,
    size: tuple[int, int] = (256, 256),
    lesions: bool = False,
    formats: tuple[str, ...] = FORMATS,
    bits_stored: int = 14,
    laterality: str | None = None,
) -> list[dict[str, Any]]:
    """Write ``count`` cases and the manifests; returns the manifest rows (one per view)."""
    from models.imaging.dicom_write import generate_uid, write_mg_phantom_dicom
    from models.imaging.files import atomic_write, write_png8, write_png16
    from training.phantoms import make_phantom_case

    out = Path(out)
    rows: list[dict[str, Any]] = []
    cases_json: list[dict[str, Any]] = []
    for i in range(count):
        case = make_phantom_case(seed + i, size, lesions=lesions, laterality=laterality)  # type: ignore[arg-type]
        dicom_dir, png_dir, truth_dir = (out / kind / case.case_id for kind in ("dicom", "png", "ground_truth"))
        study_uid, series_uid = generate_uid(), generate_uid()
        patient_id = f"PH{case.seed:06d}"
        views_json: dict[str, Any] = {}
        for number, view in enumerate(case.views, start=1):
            stem = f"{case.laterality}_{view.view}"
            row: dict[str, Any] = {
                "case_id": case.case_id,
                "seed": case.seed,
                "laterality": case.laterality,
                "view": view.view,
                "height": size[0],
                "width": size[1],
                "density": round(case.density, 4),
                "bits_stored": bits_stored if "dicom" in formats else "",
                "pixel_spacing_mm": round(case.pixel_spacing_mm, 5),
                "dicom": "",
                "png": "",
                "lesion_mask": "",
                "healthy_png": "",
                "n_lesions": len(view.lesions),
                "lesion_kinds": ";".join(lesion.kind for lesion in view.lesions),
                "patient_id": patient_id,
                "study_uid": study_uid if "dicom" in formats else "",
                "series_uid": series_uid if "dicom" in formats else "",
            }
            if "dicom" in formats:
                path = write_mg_phantom_dicom(
                    dicom_dir / f"{stem}.dcm",
                    view.image,
                    laterality=case.laterality,
                    view=view.view,
                    patient_id=patient_id,
                    study_uid=study_uid,
                    series_uid=series_uid,
                    instance_number=number,
                    bits_stored=bits_stored,
                    pixel_spacing_mm=round(case.pixel_spacing_mm, 5),
                    seed=case.seed,
                    description="with lesions" if view.lesions else "healthy",
                )
                row["dicom"] = path.relative_to(out).as_posix()
            if "png" in formats:
                row["png"] = write_png16(png_dir / f"{stem}.png", view.image).relative_to(out).as_posix()
            if lesions:
                mask_path = write_png8(truth_dir / f"{stem}_lesions.png", view.lesion_mask.astype("float32"))
                row["lesion_mask"] = mask_path.relative_to(out).as_posix()
                # The same acquisition without the lesions: the oracle "healthy reconstruction".
                healthy_path = write_png16(truth_dir / f"{stem}_healthy.png", view.healthy)
                row["healthy_png"] = healthy_path.relative_to(out).as_posix()
            rows.append(row)
            views_json[view.view] = {
                **{k: row[k] for k in ("dicom", "png", "lesion_mask", "healthy_png")},
                "nipple": [round(float(x), 2) for x in view.nipple],
                "lesions": [
                    {
                        "kind": lesion.kind,
                        "center": [round(float(x), 2) for x in lesion.center],
                        "diameter_px": round(float(lesion.diameter_px), 2),
                        "contrast": round(float(lesion.contrast), 4),
                        "nipple_distance_px": round(float(lesion.nipple_distance_px), 2),
                        "count": lesion.count,
                    }
                    for lesion in view.lesions
                ],
            }
        cases_json.append(
            {
                "case_id": case.case_id,
                "seed": case.seed,
                "laterality": case.laterality,
                "density": round(case.density, 4),
                "patient_id": patient_id,
                "study_uid": study_uid,
                "views": views_json,
            }
        )
    manifest = {
        "generator": "mammogen phantoms (training.phantoms; recipe in docs/DATA.md)",
        "note": "procedural phantoms, not patients; not for research or clinical use as real data",
        "size": list(size),
        "seed": seed,
        "count": count,
        "lesions": lesions,
        "formats": list(formats),
        "orientation": "standard display: L breasts chest wall left, R breasts chest wall right",
        "cases": cases_json,
    }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "manifest.csv", lambda f: f.write(buf.getvalue().encode()))
    atomic_write(out / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=2).encode()))
    return rows
