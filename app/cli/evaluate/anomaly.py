"""``mammogen evaluate anomaly``: anomaly maps on phantoms with known masses, every figure labelled by threshold mode.

Three seeded phantom sets, disjoint by seed: TEST views with masses (scored), VALIDATION views with
masses (only to choose the best-Dice threshold) and HEALTHY views (only to calibrate the percentile
threshold). Ground truth is the phantom's mass mask; calcification pixels are left out of the pooled
pixel metrics (they are anomalies, but not the target). Reported (docs/SUPERRES_ANOMALY.md):

- threshold-free: pooled pixel AUROC and AUPRC over the breast;
- per image IoU and Dice under each mode: fixed, per-image Otsu, healthy-calibrated percentile,
  best Dice on the validation split, and the test-set oracle (an upper bound only);
- IoU by lesion size in the form of the paper's Table 6 (equal-count buckets, median area).

``--oracle`` skips the model and uses each phantom's healthy twin as the reconstruction: the best any
model could do with this recipe, and a check of the metric code.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from app.cli.common import add_sampling_arguments, sampling_options

MODES_ORDER = ("fixed", "otsu", "percentile", "best_dice_val", "oracle_best_dice")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="MAMBO bundle trained on healthy images")
    parser.add_argument("--oracle", action="store_true", help="healthy twin as the reconstruction (no model)")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.md/json, per_image.csv, examples")
    parser.add_argument("--count", type=int, default=12, help="test phantoms with masses")
    parser.add_argument("--val", type=int, default=6, help="validation phantoms with masses (best-Dice threshold)")
    parser.add_argument("--healthy", type=int, default=6, help="healthy phantoms (percentile calibration)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="phantom size")
    parser.add_argument("--view", default="cc", choices=("cc", "mlo", "both"))
    parser.add_argument("--phantom-seed", type=int, default=1000, help="first test phantom seed")
    parser.add_argument("--lambda", dest="lam", type=int, default=700)
    parser.add_argument("--seeds", type=int, default=5, help="reconstructions averaged per image")
    add_sampling_arguments(
        parser,
        kind="anomaly",
        sampler="ddim",
        steps=100,
        steps_help="sampler steps over the 1000-step schedule",
        stitching=False,
    )
    parser.add_argument("--recipe", default="strong", choices=("strong", "paper"))
    parser.add_argument("--resolution", default="global", choices=("global", "full"))
    parser.add_argument("--fixed-threshold", type=float, default=0.1, help="heat threshold of the fixed mode")
    parser.add_argument("--percentile", type=float, default=99.0, help="healthy percentile of the percentile mode")
    parser.add_argument("--buckets", type=int, default=6, help="lesion-size buckets (the paper: 6)")
    parser.add_argument("--images", type=Path, default=None, help="your own test images (instead of phantoms)")
    parser.add_argument("--masks", type=Path, default=None, help="lesion masks for --images (same file stem)")
    parser.add_argument("--val-images", type=Path, default=None, help="your validation images (threshold choice)")
    parser.add_argument("--val-masks", type=Path, default=None, help="lesion masks for --val-images")
    parser.add_argument("--device", default=None)


@dataclass
class Case:
    """One phantom view and its ground truth, plus the anomaly result once computed."""

    name: str
    image: np.ndarray
    healthy: np.ndarray
    laterality: str
    target: np.ndarray  # mass mask
    breast: np.ndarray  # ground-truth breast mask
    ignore: np.ndarray  # calcifications: left out of pooled pixel metrics
    result: Any = None


def make_cases(first_seed: int, count: int, size: tuple[int, int], lesions: bool, views: tuple[str, ...]) -> list[Case]:
    from training.phantoms import make_phantom_case

    cases = []
    for seed in range(first_seed, first_seed + count):
        pc = make_phantom_case(seed, size, lesions=lesions)
        for view in views:
            v = getattr(pc, view)
            cases.append(
                Case(
                    name=f"{pc.case_id}-{pc.laterality}-{view.upper()}",
                    image=v.image,
                    healthy=v.healthy,
                    laterality=pc.laterality,
                    target=v.mass_mask,
                    breast=v.breast_mask,
                    ignore=v.calcification_mask,
                )
            )
    return cases


def folder_cases(images: Path, masks: Path | None) -> list[Case]:
    """A user's images with their lesion masks (non-zero = lesion), paired by file stem; a mask may be
    named like its image or with a ``_mask`` suffix. Unpaired images are refused by name."""
    from app.cli.evaluate.generation import list_images
    from models.errors import BadInputError
    from models.imaging.mask import breast_mask
    from models.imaging.readers import read_image

    if masks is None:
        raise BadInputError(f"{images}: lesion masks are needed to score anomaly maps (--masks / --val-masks)")
    if not masks.is_dir():
        raise BadInputError(f"not a folder: {masks}")
    by_stem = {}
    for p in sorted(masks.rglob("*")):
        if p.is_file():
            by_stem.setdefault(p.stem.removesuffix("_mask"), p)
    cases = []
    for path in list_images(images):
        mask_path = by_stem.get(path.stem)
        if mask_path is None:
            raise BadInputError(f"{path.name}: no lesion mask named {path.stem}.* or {path.stem}_mask.* in {masks}")
        image, info = read_image(path)
        target = read_image(mask_path, apply_voi=False)[0] > 0
        if target.shape != image.shape:
            raise BadInputError(f"{mask_path.name}: mask {target.shape} does not match image {image.shape}")
        cases.append(
            Case(
                name=path.stem,
                image=image,
                healthy=image,
                laterality=info.laterality or "",
                target=target,
                breast=breast_mask(image),
                ignore=np.zeros_like(target),
            )
        )
    if not cases:
        raise BadInputError(f"no images in {images}")
    return cases


def evaluate_cases(
    test: list[Case],
    val: list[Case],
    healthy: list[Case],
    *,
    fixed_threshold: float,
    percentile: float,
    n_buckets: int,
) -> dict[str, Any]:
    """Every figure of the report, each carrying its threshold mode (pure: no model, no I/O)."""
    from models.anomaly_postprocess import calibrate_percentile
    from models.metrics.segmentation import (
        MODE_LABELS,
        best_dice_threshold,
        iou_by_lesion_size,
        pixel_auprc,
        pixel_auroc,
        score_image,
    )

    heat = [c.result.heatmap for c in test]
    regions = [c.breast & ~c.ignore for c in test]
    targets = [c.target for c in test]
    pooled = {
        "threshold_mode": "threshold_free",
        "auroc": pixel_auroc(heat, targets, regions),
        "auprc": pixel_auprc(heat, targets, regions),
        "lesion_pixels_inside_search_region": float(
            sum(int((c.target & c.result.region).sum()) for c in test) / max(1, sum(int(c.target.sum()) for c in test))
        ),
    }
    thresholds: dict[str, float | None] = {"fixed": fixed_threshold, "otsu": None}
    if healthy:
        thresholds["percentile"] = calibrate_percentile(
            [c.result.heatmap for c in healthy], [c.result.region for c in healthy], percentile
        )
    if val:
        thresholds["best_dice_val"] = best_dice_threshold(
            [c.result.heatmap[c.result.region] for c in val], [c.target[c.result.region] for c in val]
        ).threshold
    thresholds["oracle_best_dice"] = best_dice_threshold(
        [c.result.heatmap[c.result.region] for c in test],
        [c.target[c.result.region] for c in test],
        mode="oracle_best_dice",
    ).threshold
    modes: dict[str, Any] = {}
    per_image: dict[str, list[dict[str, Any]]] = {c.name: [] for c in test}
    for mode in MODES_ORDER:
        if mode not in thresholds:
            continue
        binarize_mode = "otsu" if mode == "otsu" else "fixed"
        scores = []
        for c in test:
            mask, t = c.result.binarize(binarize_mode, thresholds[mode])
            s = score_image(c.name, mask, c.target, t, mode)
            scores.append(s)
            per_image[c.name].append(asdict(s))
        ious, dices = np.array([s.iou for s in scores]), np.array([s.dice for s in scores])
        modes[mode] = {
            "label": MODE_LABELS[mode],
            "threshold": thresholds[mode],
            "mean_iou": float(ious.mean()),
            "std_iou": float(ious.std()),
            "mean_dice": float(dices.mean()),
            "std_dice": float(dices.std()),
            "images": len(scores),
            "by_lesion_size": [b.to_dict() for b in iou_by_lesion_size(scores, n_buckets)],
        }
    return {"pooled": pooled, "modes": modes, "per_image": per_image, "percentile": percentile}


def format_report(report: dict[str, Any], header: dict[str, Any]) -> str:
    from models.metrics.segmentation import MODE_LABELS, SizeBucket, format_size_table

    lines = [f"## Anomaly maps on phantoms — {header['title']}", ""]
    lines += [f"- {k}: {v}" for k, v in header["settings"].items()]
    p = report["pooled"]
    lines += [
        "",
        "| Threshold mode | Threshold | Mean IoU (± sd) | Mean Dice (± sd) | Images |",
        "|---|---|---|---|---|",
        f"| {MODE_LABELS['threshold_free']} | — | AUROC {p['auroc']:.3f} | AUPRC {p['auprc']:.3f} | "
        f"{header['settings']['test views']} |",
    ]
    for m in report["modes"].values():
        t = "per image" if m["threshold"] is None else f"{m['threshold']:.4g}"
        lines.append(
            f"| {m['label']} | {t} | {m['mean_iou']:.3f} ± {m['std_iou']:.3f} | "
            f"{m['mean_dice']:.3f} ± {m['std_dice']:.3f} | {m['images']} |"
        )
    lines += [
        "",
        f"Mass pixels inside the searched (eroded) breast region: {p['lesion_pixels_inside_search_region']:.1%}.",
        "",
    ]
    for m in report["modes"].values():
        buckets = [SizeBucket(**b) for b in m["by_lesion_size"]]
        lines += [format_size_table(buckets), ""]
    names = list(report["modes"])
    lines += ["Per image (IoU / Dice):", ""]
    lines.append("| Image | Mass px | " + " | ".join(MODE_LABELS[n] for n in names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for name, rows in report["per_image"].items():
        cells = " | ".join(f"{r['iou']:.3f} / {r['dice']:.3f}" for r in rows)
        lines.append(f"| {name} | {rows[0]['lesion_area_px']} | {cells} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from app.cli.superres import require_bundle
    from app.settings import get_settings
    from models.anomaly import AnomalyPipeline, anomaly_from_reconstructions
    from models.anomaly_input import prepare as prepare_input
    from models.anomaly_postprocess import PAPER_POST, STRONG_POST
    from models.bundle import load_bundle
    from models.devices import resolve_device
    from models.errors import BadInputError
    from models.geometry import MamboGeometry
    from models.options import request_seeds
    from models.preprocess import DEFAULT_PREPROCESS
    from models.requests import AnomalyConfig

    if min(args.count, args.seeds) < 1 or min(args.val, args.healthy) < 0:
        raise BadInputError("--count and --seeds must be >= 1, --val and --healthy >= 0")
    settings = get_settings()
    bundle_path = args.bundle or settings.bundle_path("mambo")
    pipe, preprocess, bundle = None, DEFAULT_PREPROCESS, None
    if args.oracle and not Path(bundle_path).exists():
        geometry, bundle_desc = None, "none (oracle, identity geometry)"
    else:
        bundle = load_bundle(require_bundle(bundle_path))
        geometry, preprocess = MamboGeometry.from_dict(bundle.geometry), bundle.preprocess
        weights = "RANDOM weights" if bundle.random_weights else "trained weights"
        bundle_desc = f"{bundle.name} {bundle.version} ({weights}; s={geometry.s}, k={geometry.k})"
        if not args.oracle:
            pipe = AnomalyPipeline.from_bundle(bundle, device=resolve_device(args.device or settings.device))
    size = tuple(args.size) if args.size else default_size(geometry, bundle)
    views = ("cc", "mlo") if args.view == "both" else (args.view,)
    if args.images is not None:
        if args.oracle:
            raise BadInputError("--oracle needs phantoms (their healthy twins); it cannot score --images")
        test = folder_cases(args.images, args.masks)
        val = folder_cases(args.val_images, args.val_masks) if args.val_images is not None else []
        healthy = []
    else:
        test = make_cases(args.phantom_seed, args.count, size, True, views)
        val = make_cases(args.phantom_seed + 10_000, args.val, size, True, views)
        healthy = make_cases(args.phantom_seed + 20_000, args.healthy, size, False, views)
    config = AnomalyConfig(
        lam=args.lam,
        post=PAPER_POST if args.recipe == "paper" else STRONG_POST,
        resolution=args.resolution,
        options=sampling_options(args, request_seeds(0, args.seeds)),
    )
    all_cases = test + val + healthy
    for i, c in enumerate(all_cases):
        info = SimpleNamespace(laterality=c.laterality or None, dataset=None)
        if pipe is None:
            g = geometry or MamboGeometry(s=max(size), k=1, overlap=0)
            prep = prepare_input(c.image, g, preprocess, info=info, companions=[c.healthy])
            c.result = anomaly_from_reconstructions(prep, list(prep.companions_global), config)
        else:
            c.result = pipe(c.image, config, info=info)
        print(f"evaluate anomaly: {i + 1}/{len(all_cases)} {c.name}", file=sys.stderr)
    report = evaluate_cases(
        test, val, healthy, fixed_threshold=args.fixed_threshold, percentile=args.percentile, n_buckets=args.buckets
    )
    header = {
        "title": "ORACLE healthy reconstruction" if args.oracle else f"bundle {bundle_desc}",
        "settings": {
            "bundle": bundle_desc,
            "reconstruction": "healthy twin (oracle)"
            if args.oracle
            else f"lambda={args.lam}, {args.seeds} seeds, {config.options.sampler} {config.options.steps} steps, "
            f"{args.resolution}",
            "recipe": args.recipe,
            "test views": len(test),
            "validation views": len(val),
            "healthy views": len(healthy),
            "percentile": args.percentile,
        },
    }
    if args.images is not None:
        header["settings"]["images"] = f"{args.images} (masks {args.masks}), validation {args.val_images or 'none'}"
        header["settings"]["ground truth"] = "the given lesion masks"
    else:
        header["settings"]["phantom size"] = f"{size[0]}x{size[1]}"
        seeds = f"test {args.phantom_seed}+, val {args.phantom_seed + 10_000}+, healthy {args.phantom_seed + 20_000}+"
        header["settings"]["phantom seeds"] = seeds
        header["settings"]["ground truth"] = "mass masks (calcifications excluded from pooled metrics)"
    text = format_report(report, header)
    print(text)
    if args.out is not None:
        write_outputs(args.out, report, header, text, test)
    return 0


def default_size(geometry: Any, bundle: Any = None) -> tuple[int, int]:
    """Phantoms at the scale the bundle was trained on (its recorded image size), else one k*s block, else 256."""
    if bundle is not None:
        size = trained_image_size(bundle)
        if size is not None:
            return size
    if geometry is None:
        return (256, 256)
    side = geometry.k * geometry.s
    return (side, side)


def trained_image_size(bundle: Any) -> tuple[int, int] | None:
    """The (H, W) of the training images as the manifest records it (geometry.native_size or the data's size)."""
    native = bundle.geometry.get("native_size")
    if native:
        return int(native[0]), int(native[1])
    stack = [bundle.manifest.get("training", {}).get("data")]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            size = node.get("size")
            if isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) for v in size):
                return int(size[0]), int(size[1])
            stack.extend(node.values())
    return None


def example_row(case: Case) -> np.ndarray:
    """One row for people to look at: input | overlay | ground truth (red) vs mask (green)."""
    r = case.result
    gray = np.repeat(np.clip(r.preprocessed, 0, 1)[..., None], 3, axis=-1)
    cmp = np.zeros_like(gray)
    cmp[..., 0], cmp[..., 1] = case.target, r.mask
    return np.concatenate([gray, r.overlay(), cmp], axis=1)


def write_outputs(out: Path, report: dict[str, Any], header: dict[str, Any], text: str, test: list[Case]) -> None:
    from models.imaging.files import atomic_write, write_png8

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.md", lambda f: f.write(text.encode()))
    payload = json.dumps({"header": header, **report}, indent=2, default=float)
    atomic_write(out / "report.json", lambda f: f.write(payload.encode()))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image", "mode", "threshold", "iou", "dice", "lesion_area_px"])
    for name, rows in report["per_image"].items():
        for r in rows:
            writer.writerow([name, r["threshold_mode"], r["threshold"], r["iou"], r["dice"], r["lesion_area_px"]])
    atomic_write(out / "per_image.csv", lambda f: f.write(buf.getvalue().encode()))
    # examples for people: input | overlay | ground truth (red) vs mask (green)
    rows = [example_row(c) for c in test[:4]]
    if rows:
        write_png8(out / "examples.png", np.concatenate(rows, axis=0))
