"""``bench steps``: fewer denoising steps (DPM-Solver++, fewer DDIM steps) against the 150-step image.

Speed from fewer steps is only worth having at quality parity, so each sampler setting runs on the
same weights, seed and stitching as a baseline (the reference code's 150 DDIM steps) and reports,
beside its time, the seam score of its stitched image and its distance to the baseline image.
With eta = 0 both DDIM and DPM-Solver++ integrate the same probability-flow ODE from the same x_T
(the per-tile generators draw x_T first), so the distance measures solver error, not a new sample.
Needs trained weights to mean anything (random networks produce noise).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.acceleration import Acceleration
from models.benchmarks.generation import build_pipeline, load_networks
from models.benchmarks.harness import clock, clock_name, environment
from models.imaging.mask import breast_mask
from models.metrics.image_quality import psnr, ssim
from models.metrics.seams import boundaries_from_geometry, seam_score
from models.options import SamplingOptions


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


def bench_steps(
    *,
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
    save_dir: str | Path | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per sampler setting, the baseline first; distances are to the baseline image."""
    device = torch.device(device)
    networks = load_networks(bundle, preset, patch, seed)
    pipe = build_pipeline(networks, acceleration or Acceleration(), device)
    plan = pipe.plan(height, width)
    env = environment(device)
    base_image: np.ndarray | None = None
    base_seconds = base_wall = 0.0
    for sampler, steps in [baseline, *settings]:
        with clock(device) as timing:
            options = SamplingOptions(sampler, steps, stitching=stitching, max_batch=max_batch, seeds=(seed,))
            result = pipe(height, width, options)
        image = result.image
        row: dict[str, Any] = {
            "bench": "steps",
            "sampler": sampler,
            "steps": steps,
            "baseline": f"{baseline[0]}:{baseline[1]}",
            "networks": networks.source,
            "height": height,
            "width": width,
            "stitching": stitching,
            "acceleration": pipe.patch_unet.acceleration.label,
            "seed": seed,
            "seconds": timing.busy(device),
            "wall_seconds": timing.wall,
            "clock": clock_name(device),
            "model_evaluations": result.stats.model_evaluations,
            "sequential_calls": result.stats.sequential_calls,
            **seams(image, plan),
            **env,
        }
        if base_image is None:
            base_image, base_seconds, base_wall = image, timing.busy(device), timing.wall
        else:
            row.update(
                speedup_vs_baseline=base_seconds / timing.busy(device),
                speedup_wall_vs_baseline=base_wall / timing.wall,
                mean_abs_diff_to_baseline=float(np.abs(image - base_image).mean()),
                psnr_db_to_baseline=psnr(image, base_image),
                ssim_to_baseline=ssim(image, base_image),
            )
        if save_dir is not None:
            from models.imaging.files import write_png16

            write_png16(Path(save_dir) / f"{sampler}-{steps}.png", image)
        yield row
