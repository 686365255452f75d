"""Denoising a grid of overlapping tiles: raster, wavefront and fused stitching.

- ``raster``: the paper's order, one tile at a time; each tile inherits (by replacement) the pixels
  that earlier tiles own.
- ``wavefront``: one batch per anti-diagonal. Every inherited pixel belongs to an earlier wave and
  every tile keeps its own generator, so the image equals raster's up to batched-arithmetic bits.
- ``fused``: all tiles denoised together at every step; their noise predictions are averaged on the
  canvas (uniform or feathered weights) and ONE scheduler step runs on the whole canvas (schedulers
  are elementwise, so multistep history stays consistent). No sequential dependency, no inheritance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from diffusers import UNet2DModel

from models.geometry import Box, TileGrid, crop, tile_weights
from models.intensity import BACKGROUND
from models.sampling import CallStats, SamplerSpec, StepCallback, denoise, tile_generator, unet_predictor


@dataclass
class StageStats:
    """What one stage cost: tiles denoised/skipped, tile-steps, network invocations, batches, time."""

    tiles: int = 0
    skipped: int = 0
    model_evaluations: int = 0
    sequential_calls: int = 0
    batches: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def denoise_grids(
    unet: UNet2DModel,
    spec: SamplerSpec,
    grid: TileGrid,
    conditions: list[Callable[[Box], torch.Tensor]],
    *,
    seeds: list[int],
    stage: str,
    actives: list[np.ndarray | None] | None = None,
    device: torch.device | str = "cpu",
    on_step: StepCallback | None = None,
) -> tuple[list[torch.Tensor], StageStats]:
    """Several images on the same grid in lock-step: their tiles share batches, so a wave of w tiles
    becomes w x images tiles per call. Each image's result equals its single-image run (per-tile
    generators seeded from that image's seed), up to batched-arithmetic bits. Stitching mode, batch
    bound and fused weights come from ``spec.options``.

    conditions[m](box) -> (Cc, s, s) clean context of image m's tile at ``box``; actives[m]: (rows,
    cols) bool, False = skipped (owned pixels stay background)."""
    stitching, max_batch = spec.options.stitching, spec.options.max_batch
    if len(conditions) != len(seeds):
        raise ValueError("one condition function and one seed per image")
    t0 = time.perf_counter()
    channels, n_img = int(unet.config.out_channels), len(seeds)
    act = [np.ones((grid.rows, grid.cols), bool) if a is None else a for a in (actives or [None] * n_img)]
    n_active = sum(int(a.sum()) for a in act)
    stats = StageStats(tiles=n_active, skipped=grid.n * n_img - n_active)
    calls = CallStats()
    canvases = [torch.full((channels, grid.height, grid.width), BACKGROUND, device=device) for _ in seeds]
    if stitching == "fused":
        if n_active:
            canvases = _fused(unet, spec, grid, conditions, act, seeds, stage, device, on_step, calls)
            stats.batches = 1
    else:
        # raster: the same tile of every image per batch; wavefront: a whole anti-diagonal of every image
        groups = [[(i, j)] for i, j in grid.raster()] if stitching == "raster" else grid.waves()
        batches = [[(m, i, j) for m in range(n_img) for i, j in g if act[m][i, j]] for g in groups]
        batches = [b for b in batches if b]
        stats.batches = len(batches)
        total = len(batches) * spec.steps
        for n, batch in enumerate(batches):
            boxes = [grid.box(i, j) for _, i, j in batch]
            known = torch.from_numpy(np.stack([grid.known_mask(i, j) for _, i, j in batch]))[:, None]
            cond = torch.stack([conditions[m](b) for (m, _, _), b in zip(batch, boxes, strict=True)]).to(device)
            x0 = denoise(
                unet_predictor(unet, cond, max_batch, calls, spec.label, spec.options.guidance_scale),
                spec,
                (len(batch), channels, grid.size, grid.size),
                [tile_generator(seeds[m], stage, grid.index(i, j)) for m, i, j in batch],
                device=device,
                known_x0=torch.stack([crop(canvases[m], b) for (m, _, _), b in zip(batch, boxes, strict=True)]),
                known_mask=known,
                on_step=None if on_step is None else _offset(on_step, n * spec.steps, total),
            )
            for (m, i, j), box, tile in zip(batch, boxes, x0, strict=True):
                own = grid.owned_box(i, j)
                canvases[m][:, own.y : own.y + own.h, own.x : own.x + own.w] = tile[
                    :, own.y - box.y : own.y - box.y + own.h, own.x - box.x : own.x - box.x + own.w
                ]
    stats.model_evaluations, stats.sequential_calls = calls.model_evaluations, calls.sequential_calls
    stats.seconds = time.perf_counter() - t0
    return canvases, stats


def _offset(on_step: StepCallback, done: int, total: int) -> StepCallback:
    return lambda n, _total: on_step(done + n, total)


def _fused(
    unet: UNet2DModel,
    spec: SamplerSpec,
    grid: TileGrid,
    conditions: list[Callable[[Box], torch.Tensor]],
    actives: list[np.ndarray],
    seeds: list[int],
    stage: str,
    device: torch.device | str,
    on_step: StepCallback | None,
    calls: CallStats,
) -> list[torch.Tensor]:
    channels, s = int(unet.config.out_channels), grid.size
    tiles = [(m, grid.box(i, j)) for m in range(len(seeds)) for i, j in grid.raster() if actives[m][i, j]]
    cond = torch.stack([conditions[m](b) for m, b in tiles]).to(device)
    w = tile_weights(s, grid.overlap, spec.options.fused_weights).to(device)
    wsum = torch.zeros(len(seeds), 1, grid.height, grid.width, device=device)
    for m, b in tiles:
        wsum[m, 0, b.y : b.y + s, b.x : b.x + s] += w
    covered = wsum > 0
    tile_predict = unet_predictor(unet, cond, spec.options.max_batch, calls, spec.label, spec.options.guidance_scale)

    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # every tile predicts its noise; predictions are averaged where tiles overlap
        eps_tiles = tile_predict(torch.stack([x_t[m, :, b.y : b.y + s, b.x : b.x + s] for m, b in tiles]), t)
        fused = torch.zeros_like(x_t)
        for (m, b), e in zip(tiles, eps_tiles, strict=True):
            fused[m, :, b.y : b.y + s, b.x : b.x + s] += w * e
        return torch.where(covered, fused / wsum.clamp(min=1e-12), fused)

    x0 = denoise(
        predict,
        spec,
        (len(seeds), channels, grid.height, grid.width),
        [tile_generator(seed, stage, -1) for seed in seeds],
        device=device,
        on_step=on_step,
    )
    return list(torch.where(covered, x0, torch.full_like(x0, BACKGROUND)))
