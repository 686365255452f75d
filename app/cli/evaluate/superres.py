"""``mammogen evaluate super-resolution``: downsample phantoms, super-resolve, compare with the original and bicubic.

Each seeded phantom view (the original, H x W) is box-downsampled by each scale, super-resolved back
to H x W by MAMBO stages 2-3 and, as the baseline, by bicubic interpolation. PSNR (inside the
ground-truth breast; background is trivially right) and SSIM (whole image) against the original
go into ONE table, method by scale. ``examples.png`` shows original | input | bicubic | MAMBO.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from app.cli.common import add_sampling_arguments, sampling_options


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="MAMBO bundle (default: the configured one)")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.md/json and examples.png")
    parser.add_argument("--count", type=int, default=6, help="phantom cases")
    parser.add_argument("--view", default="cc", choices=("cc", "mlo", "both"))
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="original size")
    parser.add_argument("--scales", default="4,16", help="comma list of integer scales (the paper: 4,16)")
    parser.add_argument("--phantom-seed", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument(
        "--images", type=Path, default=None, help="your own full-resolution images as the originals (not phantoms)"
    )
    add_sampling_arguments(parser, kind="superres")
    parser.add_argument("--device", default=None)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd of PSNR/SSIM per (scale, method), in input order."""
    keys: list[tuple[int, str]] = []
    for r in rows:
        if (r["scale"], r["method"]) not in keys:
            keys.append((r["scale"], r["method"]))
    table = []
    for scale, method in keys:
        sel = [r for r in rows if r["scale"] == scale and r["method"] == method]
        psnr, ssim = np.array([r["psnr_breast"] for r in sel]), np.array([r["ssim"] for r in sel])
        table.append(
            {
                "scale": scale,
                "method": method,
                "psnr_breast_mean": float(psnr.mean()),
                "psnr_breast_sd": float(psnr.std()),
                "ssim_mean": float(ssim.mean()),
                "ssim_sd": float(ssim.std()),
                "images": len(sel),
            }
        )
    return table


def format_table(table: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [f"## Super-resolution on phantoms — {header['title']}", ""]
    lines += [f"- {k}: {v}" for k, v in header["settings"].items()]
    lines += ["", "| Scale | Method | PSNR in breast, dB (± sd) | SSIM (± sd) | Images |", "|---|---|---|---|---|"]
    for t in table:
        lines.append(
            f"| {t['scale']}x | {t['method']} | {t['psnr_breast_mean']:.2f} ± {t['psnr_breast_sd']:.2f} | "
            f"{t['ssim_mean']:.3f} ± {t['ssim_sd']:.3f} | {t['images']} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from app.cli.evaluate.anomaly import trained_image_size
    from app.cli.superres import require_bundle
    from app.settings import get_settings
    from models.bundle import load_bundle
    from models.devices import resolve_device
    from models.errors import BadInputError
    from models.metrics.image_quality import bicubic_upsample, downsample_area, psnr, ssim
    from models.requests import SuperResConfig
    from models.superres import SuperResolutionPipeline

    try:
        scales = [int(s) for s in args.scales.split(",") if s.strip()]
    except ValueError as exc:
        raise BadInputError(f"--scales must be a comma list of integers, got {args.scales!r}") from exc
    if not scales or min(scales) < 2 or args.count < 1:
        raise BadInputError("--scales must be integers >= 2 and --count >= 1")
    settings = get_settings()
    bundle = load_bundle(require_bundle(args.bundle or settings.bundle_path("mambo")))
    options = sampling_options(args, (args.seed,))
    pipe = SuperResolutionPipeline.from_bundle(bundle, device=resolve_device(args.device or settings.device))
    g = pipe.mambo.geometry
    size = tuple(args.size) if args.size else default_size(g.s, g.k, max(scales), trained_image_size(bundle))
    if size[0] % max(scales) or size[1] % max(scales):
        raise BadInputError(f"the phantom size {size} must be divisible by every scale {scales}")
    rows: list[dict[str, Any]] = []
    examples: list[np.ndarray] = []
    for n, (name, original, breast, laterality) in enumerate(originals(args, size, max(scales))):
        for scale in scales:
            low = downsample_area(original, scale)
            config = SuperResConfig(scale=scale, options=options)
            result = pipe(low, config, info=SimpleNamespace(laterality=laterality, dataset=None))
            bicubic = bicubic_upsample(low, original.shape)
            for method, out in (("bicubic", bicubic), ("MAMBO stages 2-3", result.image)):
                rows.append(
                    {
                        "image": name,
                        "scale": scale,
                        "method": method,
                        "stand_in": result.stand_in if method != "bicubic" else "",
                        "psnr_breast": psnr(out, original, mask=breast),
                        "ssim": ssim(out, original),
                    }
                )
            if n < 2:
                nearest = np.kron(low, np.ones((scale, scale), np.float32))
                examples.append(np.concatenate([original, nearest, bicubic, result.image], axis=1))
            print(f"evaluate super-resolution: {name} x{scale} ({result.stand_in})", file=sys.stderr)
    table = summarize(rows)
    weights = "RANDOM weights" if bundle.random_weights else "trained weights"
    header = {
        "title": f"bundle {bundle.name} {bundle.version} ({weights})",
        "settings": {
            "geometry": f"s={g.s}, k={g.k}, overlap={g.overlap}",
            "originals": f"{args.images}" if args.images is not None else f"phantoms {size[0]}x{size[1]}",
            "views": len(rows) // (2 * len(scales)),
            "downsampling": "box average by the scale",
            "sampling": f"{options.sampler} {options.steps} steps, {args.stitching} stitching, seed {args.seed}",
            "stand-in": ", ".join(
                sorted({f"{r['scale']}x: input as {r['stand_in']} image" for r in rows if r["stand_in"]})
            ),
            "PSNR": "inside the ground-truth breast mask; SSIM over the whole image",
        },
    }
    text = format_table(table, header)
    print(text)
    if args.out is not None:
        from models.imaging.files import atomic_write, write_png8

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out / "report.md", lambda f: f.write(text.encode()))
        payload = json.dumps({"header": header, "table": table, "rows": rows}, indent=2)
        atomic_write(args.out / "report.json", lambda f: f.write(payload.encode()))
        if examples:
            write_png8(args.out / "examples.png", np.concatenate(examples, axis=0))
    return 0


def originals(args: argparse.Namespace, size: tuple[int, int], multiple: int) -> Any:
    """(name, original, breast mask, laterality) of each original: seeded phantoms, or the user's
    folder (each cropped at the top-left to a multiple of the largest scale)."""
    from app.cli.evaluate.generation import list_images
    from models.errors import BadInputError
    from models.imaging.mask import breast_mask
    from models.imaging.readers import read_image
    from training.phantoms import make_phantom_case

    if args.images is not None:
        paths = list_images(args.images)
        if not paths:
            raise BadInputError(f"no images in {args.images}")
        for path in paths:
            image, info = read_image(path)
            h, w = image.shape[0] // multiple * multiple, image.shape[1] // multiple * multiple
            if min(h, w) == 0:
                raise BadInputError(f"{path.name}: {image.shape} is smaller than the largest scale {multiple}")
            image = np.ascontiguousarray(image[:h, :w])
            yield path.stem, image, breast_mask(image), info.laterality
        return
    views = ("cc", "mlo") if args.view == "both" else (args.view,)
    for seed in range(args.phantom_seed, args.phantom_seed + args.count):
        case = make_phantom_case(seed, size)
        for view in views:
            v = getattr(case, view)
            yield f"{case.case_id}-{case.laterality}-{view.upper()}", v.image, v.breast_mask, case.laterality


def default_size(s: int, k: int, max_scale: int, trained: tuple[int, int] | None = None) -> tuple[int, int]:
    """The bundle's training image size (else one k*s block), rounded up to multiples of the largest scale."""
    h, w = trained or (k * s, k * s)
    return -(-h // max_scale) * max_scale, -(-w // max_scale) * max_scale
