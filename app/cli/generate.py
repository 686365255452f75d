"""``mammogen generate``: full-resolution mammograms with the MAMBO ensemble, as 16-bit PNG (+ NPY).

stdout gets ONE JSON line: per image its seed and files; per run (a group of --images-per-batch
images denoised in lock-step) the timings, model evaluations and sequential calls per stage.
Progress goes to stderr. ``--class`` picks the class of a class-conditional bundle; each ``--lesion
KIND:ROW,COL,DIAMETER_PX`` is inserted into every image after generation (``models.lesion_insertion``, as
``POST /generate`` with lesions does): the image file then holds the lesions, and beside it come
``<stem>_healthy.png`` (before insertion), ``<stem>_mask-01.png`` ... ``<stem>_mask-union.png`` and
``<stem>_lesions.json`` (``models.lesion_outputs``). ``--format`` may add ``dicom`` (``<stem>.dcm``, Secondary
Capture) and ``dicom-mg`` (``<stem>_mg.dcm``, Digital Mammography, with ``--view``), written as the service
writes them; with lesions, ``<stem>_lesions_seg.dcm`` then holds the masks as a DICOM SEG referencing the
image's DICOM (the MG object when both are written).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from app.cli.common import (
    add_acceleration_arguments,
    add_sampling_arguments,
    load_accelerated,
    progress_printer,
    sampling_options,
)

FORMATS = ("png", "npy", "dicom", "dicom-mg")


def _formats(text: str) -> tuple[str, ...]:
    fmts = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise argparse.ArgumentTypeError(f"formats must be a comma list of {FORMATS}, got {text!r}")
    return fmts


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="MAMBO bundle (default: the configured one)")
    parser.add_argument("--height", type=int, default=None, help="output height (default: the bundle's native)")
    parser.add_argument("--width", type=int, default=None, help="output width (default: the bundle's native)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed + i")
    add_sampling_arguments(parser, kind="mambo", steps_help="denoising steps per stage (paper: DDIM 150)")
    parser.add_argument("--count", type=int, default=1, help="number of images")
    parser.add_argument(
        "--images-per-batch",
        type=int,
        default=None,
        help="images denoised in lock-step (their tiles share network calls); default: all of them, as the "
        "service's job does (a smaller group bounds memory)",
    )
    parser.add_argument("--chest-wall", default="left", choices=("left", "right"))
    parser.add_argument("--no-skip-background", action="store_true", help="denoise tiles outside the breast too")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: settings, else auto)")
    add_acceleration_arguments(parser)
    parser.add_argument("--format", type=_formats, default=("png",), help="comma list of png,npy,dicom,dicom-mg")
    parser.add_argument(
        "--view", default=None, choices=("CC", "MLO"), help="the view DICOM records (needed by dicom-mg)"
    )
    parser.add_argument("--class", dest="label", default=None, help="class of a class-conditional bundle")
    parser.add_argument(
        "--lesion",
        action="append",
        default=[],
        metavar="KIND:ROW,COL,DIAMETER_PX",
        help="a lesion inserted into every image after generation (image pixels); repeat for more",
    )
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (1: plain)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from app.settings import get_settings
    from models.bundle import load_bundle
    from models.errors import BadInputError
    from models.imaging.dicom_write import write_generated_mambo
    from models.imaging.files import write_npy, write_png16
    from models.lesion_spec import LesionSpec
    from models.mambo import MamboPipeline
    from models.options import request_seeds
    from models.requests import GenerationRequest, with_seeds

    group_size = max(1, args.count) if args.images_per_batch is None else args.images_per_batch
    if group_size < 1:
        raise BadInputError("--images-per-batch must be >= 1")
    if "dicom-mg" in args.format and args.view is None:
        raise BadInputError("--format dicom-mg needs --view CC or MLO (the view the image records)")
    request = GenerationRequest(
        "mambo",
        args.height,
        args.width,
        laterality="R" if args.chest_wall == "right" else "L",
        options=replace(
            sampling_options(args, request_seeds(args.seed, args.count)), guidance_scale=args.guidance_scale
        ),
        label=args.label,
        lesions=tuple(LesionSpec.parse(text) for text in args.lesion),
    )
    settings = get_settings()
    bundle_path = args.bundle or settings.bundle_path("mambo")
    t0 = time.perf_counter()
    bundle = load_bundle(bundle_path)  # verified: BundleNotFoundError says how to make one
    pipe, accel = load_accelerated(MamboPipeline, bundle, args, max_side=settings.max_image_side)
    inserter = None
    if request.lesions:
        from models.lesion_insertion import LesionInserter, insert_into_generated
        from models.lesion_outputs import write_generated

        inserter = LesionInserter(pipe)  # its lesion network was prepared with the stage networks
    load_s = time.perf_counter() - t0
    out: Path = args.out
    images: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    seeds = request.options.seeds
    for g in range(0, len(seeds), group_size):
        group = seeds[g : g + group_size]  # denoised in lock-step, as the service's job does
        part = with_seeds(request, group)
        results = pipe.run(part, progress_printer(f"generate {g + len(group)}/{args.count}"))
        runs.append(results[0].stats.to_dict())
        healthy = [r.image for r in results]
        insertions = (
            insert_into_generated(inserter, part, healthy, callback=progress_printer("insert-lesion"))
            if inserter is not None
            else []
        )
        for i, seed in enumerate(group):
            stem = f"mambo_seed{seed}"
            image = insertions[i].image if insertions else healthy[i]
            files: dict[str, str] = {}
            if "png" in args.format:
                files["png"] = str(write_png16(out / f"{stem}.png", image))
            if "npy" in args.format:
                files["npy"] = str(write_npy(out / f"{stem}.npy", image))
            dicoms = write_generated_mambo(
                out,
                stem,
                image,
                args.format,
                model_name=bundle.name,
                model_version=bundle.version,
                laterality=request.laterality,
                view=args.view,
                seed=seed,
                chest_wall=request.chest_wall,
                pixel_spacing_mm=bundle.pixel_spacing_mm,
                description="MAMBO with inserted lesions" if insertions else "MAMBO",
            )
            files.update({"dicom" if p.name == f"{stem}.dcm" else "dicom-mg": str(p) for p in dicoms})
            if insertions:
                named = {"name": bundle.name, "version": bundle.version}
                dicom = dicoms[-1] if dicoms else None  # the SEG references the MG object when both are written
                for path in write_generated(
                    out, stem, healthy[i], insertions[i], bundle=named, seed=seed, image_dicom=dicom
                ):
                    files[path.name.removeprefix(f"{stem}_")] = str(path)
            images.append({"seed": seed, "files": files, "run": len(runs) - 1})
    report = {
        "bundle": str(bundle_path),
        "bundle_name": bundle.name,
        "bundle_version": bundle.version,
        "random_weights": bundle.random_weights,
        "height": int(results[0].image.shape[0]),
        "width": int(results[0].image.shape[1]),
        "device": str(pipe.device),
        "acceleration": accel.label,
        "load_seconds": round(load_s, 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "model_evaluations": sum(r["model_evaluations"] for r in runs),
        "sequential_calls": sum(r["sequential_calls"] for r in runs),
        "images": images,
        "runs": runs,
    }
    print(json.dumps(report))
    return 0
