"""``mammogen insert-lesion INPUT --lesion KIND:ROW,COL,DIAMETER_PX [...] --out DIR``: put lesions of a chosen
kind, place and size into a mammogram and get their exact masks back.

INPUT is a DICOM, PNG or TIFF. ROW, COL are pixels of the input as given (before any flip the model
needs), DIAMETER_PX the lesion's diameter in those pixels; ``--lesion-mask KIND:PATH`` gives a lesion as a
label image of the input's size instead (non-zero = lesion). Only pixels near each lesion change: every
pixel outside the edit regions is the input's, bit for bit. DIR receives ``edited.png`` (16-bit),
``mask-01.png`` ... (one 8-bit label image per lesion, 255 = lesion), ``mask-union.png`` and
``lesions.json`` (what was put where, the statistics, the input and the bundle); for a DICOM input also the
edited image as DICOM in the input's study (``edited_mg.dcm``, Digital Mammography, when the input states
its laterality and a CC/MLO view, else ``edited.dcm``, Secondary Capture) and ``lesions_seg.dcm``, the masks
as a DICOM SEG referencing it (``models.lesion_outputs``; the service's insert-lesion job writes the same).
The report also goes to stdout as one JSON line.
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

FORMAT_HELP = "comma list of png16,npy,dicom,dicom-mg,dicom-seg (default: png16, plus DICOM + SEG for a DICOM input)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT", help="mammogram (DICOM, PNG or TIFF)")
    parser.add_argument(
        "--lesion",
        action="append",
        default=[],
        metavar="KIND:ROW,COL,DIAMETER_PX",
        help="a lesion to insert, e.g. mass:300,200,24 (input pixels, before any flip); repeat for more",
    )
    parser.add_argument(
        "--lesion-mask",
        action="append",
        default=[],
        metavar="KIND:PATH",
        help="a lesion given as a label image of the input's size (non-zero = lesion); repeat for more",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--bundle", type=Path, default=None, help="MAMBO bundle with a lesion network")
    parser.add_argument("--seed", type=int, default=0)
    add_sampling_arguments(parser, kind="insertion", stitching=False, max_batch_help="windows per network call")
    parser.add_argument(
        "--guidance-scale", type=float, default=1.0, help="classifier-free guidance toward the kind (1: plain)"
    )
    parser.add_argument("--format", default=None, help=FORMAT_HELP)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: settings, else auto)")
    add_acceleration_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from app.cli.superres import require_bundle
    from app.settings import get_settings
    from models.errors import BadInputError
    from models.imaging.readers import read_image
    from models.lesion_insertion import LesionInserter
    from models.lesion_outputs import (
        REPORT,
        check_formats,
        default_formats,
        report,
        write_edited,
        write_masks,
        write_report,
    )
    from models.lesion_spec import LesionSpec
    from models.requests import InsertionRequest

    # everything that can be checked without the model is checked before it loads
    lesions = [LesionSpec.parse(text) for text in args.lesion]
    settings = get_settings()
    image, info = read_image(args.input, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side)
    lesions += [_mask_lesion(text) for text in args.lesion_mask]
    options = replace(sampling_options(args, (args.seed,)), guidance_scale=args.guidance_scale)
    if not lesions:
        raise BadInputError("give at least one lesion: --lesion KIND:ROW,COL,DIAMETER_PX or --lesion-mask KIND:PATH")
    request = InsertionRequest(tuple(lesions), options)
    formats = check_formats(
        default_formats(info) if args.format is None else [f.strip() for f in args.format.split(",") if f.strip()],
        info,
    )
    bundle_path = require_bundle(args.bundle or settings.bundle_path("mambo"))
    inserter, accel = load_accelerated(LesionInserter, bundle_path, args)
    result = inserter(image, request.lesions, request.options, info=info, callback=progress_printer("insert-lesion"))
    out: Path = args.out
    mambo = inserter.mambo
    paths = write_edited(
        out, result, formats=formats, info=info, model_name=mambo.name, model_version=mambo.version
    ) + write_masks(out, result.masks)
    body = report(
        result,
        bundle={"name": mambo.name, "version": mambo.version, "path": str(bundle_path)},
        input={"path": str(args.input), "format": info.format, "height": info.height, "width": info.width},
        files=[p.name for p in paths] + [REPORT],
        extra={"acceleration": accel.label, "options": request.options.to_dict()},
    )
    write_report(out / REPORT, body)
    print(json.dumps(body))
    sys.stdout.flush()
    return 0


def _mask_lesion(text: str) -> Any:
    """``KIND:PATH`` -> a LesionSpec with that mask."""
    from models.errors import BadInputError
    from models.lesion_outputs import read_mask
    from models.lesion_spec import LesionSpec

    kind, sep, path = text.partition(":")
    if not sep or not kind.strip() or not path:
        raise BadInputError(f"a lesion mask is KIND:PATH (e.g. mass:roi.png), got {text!r}")
    return LesionSpec(kind.strip(), mask=read_mask(Path(path)))
