"""``mammogen super-resolve INPUT --scale 4|16 --out DIR``: MAMBO stages 2-3 on a real low-resolution mammogram.

INPUT is a DICOM, PNG or TIFF. DIR receives ``superres.png`` (16-bit, the input's orientation),
``bicubic.png`` (the baseline at the same size, for comparison), ``superres.dcm`` when the input
is a DICOM (a derived image in the input's study, new series) and ``superres.json`` (sizes, what the
input stood in for, sampler, timings); the JSON also goes to stdout as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.cli.common import (
    add_acceleration_arguments,
    add_sampling_arguments,
    load_accelerated,
    progress_printer,
    sampling_options,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT", help="low-resolution mammogram (DICOM, PNG or TIFF)")
    parser.add_argument("--scale", type=int, default=4, help="upscaling factor: 4 or 16 as in the paper (any >= 2)")
    parser.add_argument("--height", type=int, default=None, help="explicit output height (with --width)")
    parser.add_argument("--width", type=int, default=None, help="explicit output width (with --height)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--bundle", type=Path, default=None, help="MAMBO bundle (default: the configured one)")
    add_sampling_arguments(parser, kind="superres")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stand-in",
        default="auto",
        choices=("auto", "global", "mid"),
        help="what the input replaces: the global image (stages 2+3) or the mid image (stage 3 only); "
        "auto: mid when the scale is at most 1.5 k",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: settings, else auto)")
    add_acceleration_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from models.imaging.files import atomic_write, write_png16
    from models.metrics.image_quality import bicubic_upsample
    from models.requests import SuperResConfig
    from models.superres import SuperResolutionPipeline

    config = SuperResConfig(args.scale, args.height, args.width, args.stand_in, sampling_options(args, (args.seed,)))
    pipe, bundle_path, image, info, result = run_on_input(args, SuperResolutionPipeline, config, "super-resolve")
    out: Path = args.out
    files = {
        "superres": str(write_png16(out / "superres.png", result.image)),
        "bicubic": str(write_png16(out / "bicubic.png", bicubic_upsample(image, result.image.shape))),
    }
    if getattr(info, "dataset", None) is not None:
        from models.imaging.dicom_write import write_derived_dicom

        spacing = info.pixel_spacing_mm
        files["dicom"] = str(
            write_derived_dicom(
                out / "superres.dcm",
                result.image,
                info.dataset,
                description=f"MAMBO super-resolution to {result.image.shape[0]}x{result.image.shape[1]}",
                model_name=f"mammogen MAMBO {pipe.mambo.name}",
                model_version=pipe.mambo.version or "unversioned",
                chest_wall=result.orientation.chest_wall,
                # the output's pixels are finer by the scale (rows decide: the aspect is kept)
                pixel_spacing_mm=spacing[0] * image.shape[0] / result.image.shape[0] if spacing else None,
            )
        )
    summary = {"input": str(args.input), "bundle": str(bundle_path), "files": files, **result.stats}
    atomic_write(out / "superres.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    print(json.dumps(summary))
    sys.stdout.flush()
    return 0


# -- helpers shared with `mammogen anomaly-map` ------------------------------------------------------------
def require_bundle(path: Path) -> Path:
    from models.errors import BundleNotFoundError

    if not Path(path).exists():
        raise BundleNotFoundError(
            f"no MAMBO bundle at {path}; make one with `mammogen bundle create --preset tiny --random --out DIR` "
            "or `mammogen train ...`, and pass --bundle DIR"
        )
    return Path(path)


def run_on_input(args: argparse.Namespace, pipeline: Any, config: Any, label: str) -> tuple[Any, Path, Any, Any, Any]:
    """Read INPUT (the settings' size bounds), load ``pipeline`` from the MAMBO bundle, run ``config``
    with progress on stderr; makes --out. Returns (pipe, bundle path, image, info, result)."""
    from app.settings import get_settings
    from models.imaging.readers import read_image

    settings = get_settings()
    image, info = read_image(args.input, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side)
    bundle_path = require_bundle(args.bundle or settings.bundle_path("mambo"))
    pipe, _ = load_accelerated(pipeline, bundle_path, args)
    result = pipe(image, config, info=info, callback=progress_printer(label))
    args.out.mkdir(parents=True, exist_ok=True)
    return pipe, bundle_path, image, info, result
