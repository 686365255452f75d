"""Model evaluations and sequential depth of each stitching mode, from the geometry alone (no model).

These are the hardware-independent half of the performance story: on a GPU a batched call costs
about as much as a batch-1 call until the device is full, so wall time follows the number of
*sequential* model calls, while the FLOPs (and a saturated GPU's time) follow the *evaluations*.
Counts are upper bounds: background-patch skipping removes an image-dependent share of tiles.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from models.geometry import MamboGeometry, TileGrid

MODES = ("raster", "wavefront", "fused")
#: bf16 dense peak of an H100 SXM / H200 (TFLOP/s), the issue's target device: the physical-limit anchor.
H100_BF16_PEAK_TFLOPS = 989.0


def _batches(grid: TileGrid, mode: str, images: int) -> list[int]:
    """Tiles per model call for one denoising step (before chunking), images run in lock-step."""
    if mode == "raster":  # the reference: one tile of one image at a time
        return [1] * (grid.n * images)
    if mode == "wavefront":
        return [len(wave) * images for wave in grid.waves()]
    if mode == "fused":
        return [grid.n * images]
    raise ValueError(f"unknown stitching mode {mode!r}; choose one of {MODES}")


def _chunk(batches: list[int], max_batch: int | None) -> list[int]:
    if not max_batch:
        return batches
    out: list[int] = []
    for b in batches:
        full, rest = divmod(b, max_batch)
        out += [max_batch] * full + ([rest] if rest else [])
    return out


def stage_calls(grid: TileGrid, mode: str, steps: int, max_batch: int | None = None, images: int = 1) -> dict:
    """Evaluations, sequential calls and batch-size histogram of one stage over all steps."""
    per_step = _chunk(_batches(grid, mode, images), max_batch)
    return {
        "tiles": grid.n,
        "evaluations": sum(per_step) * steps,
        "sequential_calls": len(per_step) * steps,
        "batch_histogram": dict(sorted(Counter(per_step).items())),
        "mean_batch": sum(per_step) / len(per_step),
    }


def stitching_counts(
    height: int,
    width: int,
    steps: int,
    *,
    max_batch: int | None = None,
    images: int = 1,
    patch: int = 256,
    overlap: int | None = None,
    gflop_per_pass: float | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per stitching mode for an H x W request (``images`` of them batched in lock-step).

    ``gflop_per_pass`` (default: the paper preset's, counted) turns evaluations into FLOPs and the
    ideal seconds at an H100's dense bf16 peak, the lower bound no implementation can beat.
    ``overlap`` defaults to the paper's ratio (32 px of 256).
    """
    plan = MamboGeometry(s=patch, overlap=patch // 8 if overlap is None else overlap).plan(height, width)
    if gflop_per_pass is None:
        gflop_per_pass = paper_gflop_per_pass(patch)
    single = TileGrid(ys=(0,), xs=(0,), size=patch)  # stage 1: one global image
    for mode in MODES:
        stages = {
            "global": stage_calls(single, "raster" if mode == "raster" else mode, steps, max_batch, images),
            "local": stage_calls(plan.local_grid, mode, steps, max_batch, images),
            "patch": stage_calls(plan.patch_grid, mode, steps, max_batch, images),
        }
        evaluations = sum(s["evaluations"] for s in stages.values())
        pflop = evaluations * gflop_per_pass / 1e6
        yield {
            "bench": "counts",
            "mode": mode,
            "height": height,
            "width": width,
            "images": images,
            "steps": steps,
            "max_batch": max_batch,
            "grids": {
                "local": [plan.local_grid.rows, plan.local_grid.cols],
                "patch": [plan.patch_grid.rows, plan.patch_grid.cols],
            },
            "tiles_per_image": 1 + plan.local_grid.n + plan.patch_grid.n,
            "evaluations": evaluations,
            "evaluations_per_image": evaluations // images,
            "sequential_calls": sum(s["sequential_calls"] for s in stages.values()),
            "sequential_calls_per_step": sum(s["sequential_calls"] for s in stages.values()) // steps,
            "stages": stages,
            "gflop_per_pass": gflop_per_pass,
            "pflop": pflop,
            "ideal_seconds_h100_bf16": pflop * 1e3 / H100_BF16_PEAK_TFLOPS,
        }


def paper_gflop_per_pass(size: int = 256, in_channels: int = 3) -> float:
    """FLOPs of one paper-preset forward pass at ``size``, counted on meta tensors (stages 2-3 have 3 channels)."""
    import torch

    from models.benchmarks.harness import count_forward_flops
    from models.unet import build_unet

    with torch.device("meta"):
        unet = build_unet("paper", in_channels, 1, sample_size=size)
    return count_forward_flops(unet, in_channels, size) / 1e9
