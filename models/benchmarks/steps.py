"""``bench steps``: fewer denoising steps (DPM-Solver++, fewer DDIM steps) against the 150-step image.

Speed from fewer steps is only worth having at quality parity, so each sampler setting runs on the
same weights, seeds and stitching as a baseline (the reference code's 150 DDIM steps) and reports,
beside its time, the seam score of its stitched image and its distance to the baseline image.
With eta = 0 both DDIM and DPM-Solver++ integrate the same probability-flow ODE from the same x_T
(the per-tile generators draw x_T first), so the distance measures solver error, not a new sample.
Needs trained weights to mean anything (random networks produce noise).

One job kind per run (``model``), so each kind's default is chosen from its own rows:

- ``mambo``: one full image per seed (generation);
- ``dualview``: one CC + MLO pair per seed, all pairs in one lock-step batch; distance over both
  views, and the pair's consistency (mean |B - |R - G||, 0 when the model kept B = |CC - MLO|);
- ``superres``: each given original is box-downsampled by ``scale`` and super-resolved back; besides
  the distance to the baseline's output, PSNR/SSIM against the original (the ground truth).

Rows: one per setting and item (seed or original), then one ``"row": "summary"`` per setting with
the means (and standard deviations) over the items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from models.acceleration import Acceleration, accelerate
from models.benchmarks.generation import build_pipeline, load_networks
from models.benchmarks.harness import clock, clock_name, environment
from models.imaging.mask import breast_mask
from models.metrics.image_quality import downsample_area, psnr, ssim
from models.metrics.seams import boundaries_from_geometry, seam_score
from models.options import SamplingOptions

MODELS: tuple[str, ...] = ("mambo", "dualview", "superres")
#: Per-item figures averaged into the summary row (those an item has).
SUMMARIZED = (
    "seconds",
    "wall_seconds",
    "model_evaluations",
    "sequential_calls",
    "seam_ratio",
    "seam_worst_line_ratio",
    "mean_abs_diff_to_baseline",
    "psnr_db_to_baseline",
    "ssim_to_baseline",
    "third_channel_error",
    "psnr_breast_to_truth",
    "ssim_to_truth",
)
#: An original for super-resolution: (name, full-resolution image in [0, 1], breast mask, laterality).
Original = tuple[str, np.ndarray, np.ndarray, str | None]


def parse_setting(text: str) -> tuple[str, int]:
    """``"dpmsolver:20"`` -> ("dpmsolver", 20)."""
    sampler, _, steps = text.partition(":")
    if not steps.isdigit():
        raise ValueError(f"expected SAMPLER:STEPS such as dpmsolver:20, got {text!r}")
    return sampler, int(steps)


def seams(image: np.ndarray, plan: Any, erode_px: int = 3) -> dict[str, float]:
    """Seam ratio (boundary / interior neighbour MSE, ~1 = seamless) on the patch grid, inside the breast."""
    mask = breast_mask(image, erode_px=erode_px)
    rows, cols = boundaries_from_geometry(plan.patch_grid)
    try:
        score = seam_score(image, rows, cols, mask=mask if mask.any() else None)
    except ValueError:  # no boundary crosses the mask (tiny images)
        return {"seam_ratio": float("nan"), "seam_worst_line_ratio": float("nan")}
    return {"seam_ratio": score.overall.ratio, "seam_worst_line_ratio": score.overall.worst_line_ratio}


def distance(image: np.ndarray, base: np.ndarray) -> dict[str, float]:
    """How far a setting moved the same sample from the baseline's (mean abs difference, PSNR, SSIM)."""
    return {
        "mean_abs_diff_to_baseline": float(np.abs(image - base).mean()),
        "psnr_db_to_baseline": psnr(image, base),
        "ssim_to_baseline": ssim(image, base),
    }


#: One setting's run: (options) -> one (item name, images compared, figures of its own) per item.
Runner = Callable[[SamplingOptions], tuple[list[tuple[str, list[np.ndarray], dict[str, Any]]], dict[str, Any]]]


def _mambo_runner(
    pipe: Any, height: int, width: int, seeds: Sequence[int], save: Callable[[str, np.ndarray], None]
) -> Runner:
    plan = pipe.plan(height, width)

    def run(options: SamplingOptions) -> tuple[list[tuple[str, list[np.ndarray], dict[str, Any]]], dict[str, Any]]:
        items = []
        for seed in seeds:
            result = pipe(height, width, replace(options, seeds=(seed,)))
            save(f"seed{seed}", result.image)
            stats = {
                "model_evaluations": result.stats.model_evaluations,
                "sequential_calls": result.stats.sequential_calls,
            }
            items.append((f"seed {seed}", [result.image], {"seed": seed, **stats, **seams(result.image, plan)}))
        return items, {}

    return run


def _dualview_runner(pipe: Any, seeds: Sequence[int], save: Callable[[str, np.ndarray], None]) -> Runner:
    from models.metrics.dualview_stats import third_channel_error

    def run(options: SamplingOptions) -> tuple[list[tuple[str, list[np.ndarray], dict[str, Any]]], dict[str, Any]]:
        result = pipe(replace(options, seeds=tuple(seeds)))  # all pairs in lock-step, as a dual-view job runs
        n = len(seeds)
        evaluations = int(result.stats["model_evaluations"]) // n
        items = []
        for i, seed in enumerate(seeds):
            save(f"seed{seed}", np.concatenate([result.cc[i], result.mlo[i]], axis=1))
            own = {
                "seed": seed,
                "model_evaluations": evaluations,
                "third_channel_error": third_channel_error(result.rgb[i]),
            }
            items.append((f"seed {seed}", [result.cc[i], result.mlo[i]], own))
        return items, {"sequential_calls": int(result.stats["sequential_model_calls"])}

    return run


def _superres_runner(
    pipe: Any, originals: Sequence[Original], scale: int, save: Callable[[str, np.ndarray], None]
) -> Runner:
    from models.requests import SuperResConfig

    lows = [(name, downsample_area(image, scale), image, mask, lat) for name, image, mask, lat in originals]

    def run(options: SamplingOptions) -> tuple[list[tuple[str, list[np.ndarray], dict[str, Any]]], dict[str, Any]]:
        items = []
        for name, low, original, mask, laterality in lows:
            result = pipe(
                low, SuperResConfig(scale=scale, options=options), info=SimpleNamespace(laterality=laterality)
            )
            save(name, result.image)
            canonical = np.fliplr(result.normalized) if result.orientation.flipped else result.normalized
            own = {
                "model_evaluations": result.stats["model_evaluations"],
                "sequential_calls": result.stats["sequential_calls"],
                "stand_in": result.stand_in,
                **seams(np.ascontiguousarray(canonical), result.plan),
                "psnr_breast_to_truth": psnr(result.image, original, mask=mask),
                "ssim_to_truth": ssim(result.image, original),
            }
            items.append((name, [result.image], own))
        return items, {}

    return run


def bench_steps(
    *,
    model: str = "mambo",
    bundle: str | Path | None = None,
    preset: str | None = None,
    patch: int | None = None,
    height: int = 256,
    width: int = 256,
    baseline: tuple[str, int] = ("ddim", 150),
    settings: Sequence[tuple[str, int]] = (("dpmsolver", 20), ("dpmsolver", 30), ("ddim", 50)),
    stitching: str = "wavefront",
    max_batch: int = 64,
    acceleration: Acceleration | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    originals: Sequence[Original] = (),
    scale: int = 4,
    save_dir: str | Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows per setting and item, the baseline first; distances are to the baseline's image of the same
    item; then one summary row per setting. ``seeds`` (default ``(seed,)``) are the sampling seeds of
    ``mambo`` and ``dualview``; ``superres`` samples every original with ``seed``."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    device = torch.device(device)
    accel = acceleration or Acceleration()
    seeds = tuple(seeds) if seeds else (seed,)
    current: list[str] = [""]

    def save(name: str, image: np.ndarray) -> None:
        if save_dir is not None:
            from models.imaging.files import write_png16

            write_png16(Path(save_dir) / current[0] / f"{name}.png", np.clip(image, 0.0, 1.0))

    source: str
    if model == "mambo":
        networks = load_networks(bundle, preset, patch, seed)
        pipe = build_pipeline(networks, accel, device)
        source, label = networks.source, pipe.patch_unet.acceleration.label
        runner = _mambo_runner(pipe, height, width, seeds, save)
        size = {"height": height, "width": width}
    elif model == "dualview":
        from models.dualview import DualViewPipeline

        if bundle is None:
            raise ValueError("bench steps --model dualview needs a dual-view bundle")
        pipe = accelerate(DualViewPipeline.from_bundle(bundle, device, accel.dtype), accel, device)
        source, label = f"bundle {pipe.name} {pipe.version}", pipe.unet.acceleration.label
        runner = _dualview_runner(pipe, seeds, save)
        size = {"height": pipe.height, "width": pipe.width}
    else:
        from models.mambo import MamboPipeline
        from models.superres import SuperResolutionPipeline

        if bundle is None or not originals:
            raise ValueError("bench steps --model superres needs a MAMBO bundle and originals")
        mambo = accelerate(MamboPipeline.from_bundle(bundle, device, accel.dtype), accel, device)
        pipe = SuperResolutionPipeline(mambo)
        source, label = f"bundle {mambo.name} {mambo.version}", mambo.patch_unet.acceleration.label
        runner = _superres_runner(pipe, originals, scale, save)
        size = {"height": int(originals[0][1].shape[0]), "width": int(originals[0][1].shape[1]), "scale": scale}
    env = environment(device)
    base_images: dict[str, list[np.ndarray]] = {}
    base_seconds: float | None = None
    for sampler, steps in [baseline, *settings]:
        name = f"{sampler}:{steps}"
        current[0] = f"{model}/{sampler}-{steps}"
        options = SamplingOptions(sampler, steps, stitching=stitching, max_batch=max_batch, seeds=seeds)  # type: ignore[arg-type]
        with clock(device) as timing:
            items, shared = runner(options)
        common = {
            "bench": "steps",
            "model": model,
            "sampler": sampler,
            "steps": steps,
            "setting": name,
            "baseline": f"{baseline[0]}:{baseline[1]}",
            "networks": source,
            **size,
            "stitching": stitching,
            "acceleration": label,
            "clock": clock_name(device),
            **env,
        }
        seconds, wall = timing.busy(device) / len(items), timing.wall / len(items)
        if base_seconds is None:
            base_seconds = seconds
        rows = []
        for item, images, own in items:
            row = {**common, "item": item, "seconds": seconds, "wall_seconds": wall, **shared, **own}
            if item not in base_images:  # the baseline's
                base_images[item] = images
            else:
                diffs = [distance(a, b) for a, b in zip(images, base_images[item], strict=True)]
                row.update({k: float(np.mean([d[k] for d in diffs])) for k in diffs[0]})
                row["speedup_vs_baseline"] = base_seconds / seconds
            rows.append(row)
            yield row
        yield summarize(common, rows, base_seconds)


def summarize(common: dict[str, Any], rows: list[dict[str, Any]], base_seconds: float) -> dict[str, Any]:
    """Means (and sds of the quality figures) over one setting's items."""
    out: dict[str, Any] = {**common, "row": "summary", "items": len(rows)}
    for key in SUMMARIZED:
        values = [float(r[key]) for r in rows if key in r and r[key] is not None]
        finite = [v for v in values if np.isfinite(v)]
        if not values:
            continue
        out[key] = float(np.mean(finite)) if finite else values[0]
        if key not in ("seconds", "wall_seconds", "model_evaluations", "sequential_calls") and len(finite) > 1:
            out[f"{key}_sd"] = float(np.std(finite))
    out["speedup_vs_baseline"] = base_seconds / out["seconds"] if out.get("seconds") else None
    return out
