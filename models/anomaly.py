"""Anomaly maps (paper §3.3): input -> training preprocessing -> noise to lambda -> healthy denoise -> residual.

The request type (``AnomalyConfig``) lives in ``models/requests.py``, input preparation in
``models/anomaly_input.py``, the model-free post-processing (residual, heat map, threshold, overlay)
in ``models/anomaly_postprocess.py``; this module holds the diffusion part and the glue.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from diffusers import UNet2DModel

from models.anomaly_input import Prepared, prepare
from models.anomaly_postprocess import (
    BinarizeMode,
    binarize,
    combine_residuals,
    eroded_region,
    heat_map,
    overlay,
    residual_map,
)
from models.errors import BadInputError
from models.geometry import area_downsample, crop, patch_conditioning, to_canvas
from models.intensity import IntensityMapping
from models.mambo import MamboPipeline, OnMambo
from models.progress import CancelFn, ProgressFn, Reporter
from models.requests import AnomalyConfig
from models.sampling import CallStats, SamplerSpec, denoise, start_index_for_timestep, tile_generator, unet_predictor

DEFAULT_CONFIG = AnomalyConfig()
#: The map size the post-processing defaults are stated for (paper: the 256^2 global model).
REFERENCE_SIDE = 256
FULL_RES_MAX_MEDIAN = 9


@dataclass
class AnomalyResult:
    """Everything in the INPUT's orientation and size, except ``global_*`` (the model's canonical grid)."""

    heatmap: np.ndarray  # (H, W) float32: post-processed residual, 0 outside the eroded breast
    mask: np.ndarray  # (H, W) bool: the binary anomaly mask
    region: np.ndarray  # (H, W) bool: where anomalies are looked for (the eroded breast)
    reconstruction: np.ndarray  # (H, W) float32 [0, 1]: the healthy reconstruction (mean over seeds)
    preprocessed: np.ndarray  # (H, W) float32 [0, 1]: the input as the model saw it
    threshold: float
    threshold_mode: str
    global_heatmap: np.ndarray  # (s, s) canonical
    min_component_px: int = 0  # blobs smaller than this (input pixels) were dropped from ``mask``
    stats: dict[str, Any] = field(default_factory=dict)

    def overlay(self) -> np.ndarray:
        return overlay(self.preprocessed, self.heatmap, self.mask)

    def binarize(self, mode: BinarizeMode, threshold: float | None = None) -> tuple[np.ndarray, float]:
        """The same heat map under another threshold mode (evaluation compares modes on one map)."""
        return binarize(self.heatmap, self.region, mode, threshold, self.min_component_px)


def anomaly_from_reconstructions(
    prep: Prepared,
    reconstructions: Sequence[np.ndarray],
    config: AnomalyConfig = DEFAULT_CONFIG,
    *,
    original: np.ndarray | None = None,
    breast: np.ndarray | None = None,
) -> AnomalyResult:
    """Residuals of healthy reconstructions against the input -> heat map, mask, in the input's frame.

    ``reconstructions`` are images on the global grid (s x s) by default; pass ``original`` and
    ``breast`` on another grid (the canonical full-resolution one) to score reconstructions made
    there. A perfect healthy reconstruction of an image with a lesion must give back the lesion:
    the tests check exactly that.
    """
    post = config.post
    x = prep.global_image if original is None else original
    b = prep.global_breast if breast is None else breast
    on_global = original is None
    # the recipe's pixel sizes are stated for a 256^2 map covering the canvas; scale to this grid
    post_here = post.scaled((x.shape[0] if on_global else prep.canvas) / REFERENCE_SIDE)
    if not on_global:  # a median window of tens of pixels costs minutes and blurs what full resolution adds
        post_here = replace(post_here, median_size=min(post_here.median_size, FULL_RES_MAX_MEDIAN))
    residuals = [
        residual_map(x, r, b, kind=post.residual, histogram_match=post.histogram_match) for r in reconstructions
    ]
    region_here = eroded_region(b, post_here.erode_px)
    heat_here = heat_map(combine_residuals(residuals, post.ensemble), region_here, post_here)
    recon_here = np.mean(np.stack(reconstructions), axis=0).astype(np.float32)
    if on_global:
        heat = np.clip(prep.global_to_canonical(heat_here), 0.0, None)
        recon = prep.global_to_canonical(recon_here)
        factor = prep.global_factor
    else:
        heat, recon, factor = heat_here, recon_here, 1
    # binarise on the input grid, so the mask has full-resolution edges; sizes scale with the grid
    region = eroded_region(prep.breast, post_here.erode_px * factor)
    heat = np.where(region, heat, 0.0).astype(np.float32)
    min_px = post_here.min_component_px * factor**2
    binary, t = binarize(heat, region, config.threshold_mode, config.threshold, min_px)
    return AnomalyResult(
        heatmap=prep.to_input(heat),
        mask=prep.to_input(binary),
        region=prep.to_input(region),
        reconstruction=prep.to_input(np.clip(recon, 0.0, 1.0).astype(np.float32)),
        preprocessed=prep.to_input(prep.canonical),
        threshold=t,
        threshold_mode=config.threshold_mode,
        global_heatmap=heat_here if on_global else np.zeros((0, 0), np.float32),
        min_component_px=min_px,
    )


class AnomalyPipeline(OnMambo):
    """Healthy-model reconstruction of a real image from timestep lambda, scored against the image.

    ``global``: the paper's setting (stage-1 model on the s x s global image). ``full``: every
    native-resolution s x s patch touching the breast is noised to lambda and denoised by the
    stage-3 model, conditioned on the REAL local context and global image; overlapping patch
    reconstructions are averaged. Seeds are batched together (one generator each).

    It runs on a MAMBO pipeline's networks, schedule, geometry and preprocessing chain (one bundle
    loader: ``MamboPipeline.from_bundle``).
    """

    def __init__(self, mambo: MamboPipeline) -> None:
        super().__init__(mambo)
        self.global_unet: UNet2DModel = mambo.global_unet
        self.patch_unet: UNet2DModel = mambo.patch_unet
        self.schedule, self.geometry, self.preprocess = mambo.schedule, mambo.geometry, mambo.preprocess

    @property
    def device(self) -> torch.device:
        return self.global_unet.device

    def __call__(
        self,
        image: np.ndarray,
        config: AnomalyConfig = DEFAULT_CONFIG,
        *,
        info: Any = None,
        callback: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> AnomalyResult:
        """Anomaly map of one [0, 1] image (any orientation, any size); results in the input's frame.

        ``info`` (an ImageInfo or DICOM dataset) lets PatientOrientation/laterality decide the flip.
        """
        t0 = time.perf_counter()
        # 1. preprocess with the chain the bundle was trained on, then build the global image
        prep = prepare(image, self.geometry, self.preprocess, info=info)
        reporter = Reporter(callback, cancel, stage_weights={"anomaly": 1.0})
        reporter.check_cancel()
        calls = CallStats()
        # 2-3. forward-noise to lambda, denoise with the healthy model, once per seed
        if config.resolution == "global":
            recons = self.reconstruct_global(prep, config, reporter, calls)
            result = anomaly_from_reconstructions(prep, recons, config)
        else:
            recons = self.reconstruct_full(prep, config, reporter, calls)
            result = anomaly_from_reconstructions(prep, recons, config, original=prep.canonical, breast=prep.breast)
        reporter.finish_stage("anomaly")
        # 4. residual, eroded mask, median filter, threshold, small blobs dropped (in anomaly_from_reconstructions)
        spec, start = self._start(config)
        result.stats = {
            "lambda": int(config.lam),
            "start_timestep": int(spec.scheduler().timesteps[start]),
            "seeds": list(config.options.seeds),
            "sampler": config.options.sampler,
            "steps": config.options.steps,
            "resolution": config.resolution,
            "residual": config.post.residual,
            "histogram_match": config.post.histogram_match,
            "threshold_mode": result.threshold_mode,
            "threshold": result.threshold,
            "orientation": prep.orientation.to_dict(),
            "canvas": prep.canvas,
            "model_evaluations": calls.model_evaluations,
            "sequential_calls": calls.sequential_calls,
            "seconds": round(time.perf_counter() - t0, 4),
        }
        return result

    def _start(self, config: AnomalyConfig) -> tuple[SamplerSpec, int]:
        spec = self.mambo.spec(config.options)
        return spec, start_index_for_timestep(spec, int(config.lam))

    def reconstruct_global(
        self, prep: Prepared, config: AnomalyConfig, reporter: Reporter | None = None, calls: CallStats | None = None
    ) -> list[np.ndarray]:
        """One healthy reconstruction (s x s, [0, 1]) of the global image per seed."""
        reporter = reporter or Reporter()
        spec, start = self._start(config)
        s = prep.global_image.shape[0]
        x0 = torch.from_numpy(IntensityMapping.to_model(prep.global_image))[None, None]
        n = len(config.options.seeds)
        out = denoise(
            unet_predictor(self.global_unet, None, config.options.max_batch, calls),
            spec,
            (n, 1, s, s),
            [tile_generator(seed, "anomaly-global", 0) for seed in config.options.seeds],
            device=self.device,
            init_x0=x0.expand(n, 1, s, s),
            start_step=start,
            on_step=lambda k, total: reporter.step("anomaly", k, total),
        )
        return [IntensityMapping.from_model(o[0].float()).cpu().numpy().astype(np.float32) for o in out]

    def reconstruct_full(
        self, prep: Prepared, config: AnomalyConfig, reporter: Reporter | None = None, calls: CallStats | None = None
    ) -> list[np.ndarray]:
        """One healthy reconstruction (H x W, [0, 1]) per seed from stage-3 patches with real context."""
        if self.patch_unet is None:
            raise BadInputError("full-resolution anomaly maps need the bundle's stage-3 (patch) network")
        reporter = reporter or Reporter()
        h, w = prep.shape
        s, k = self.geometry.s, self.geometry.k
        if h < s or w < s:
            raise BadInputError(f"full-resolution anomaly maps need an image of at least {s}x{s}, got {h}x{w}")
        plan = self.geometry.plan(h, w)
        spec, start = self._start(config)
        full = to_canvas(torch.from_numpy(IntensityMapping.to_model(prep.canonical)), plan.canvas)
        mid = area_downsample(full, k)
        g = torch.from_numpy(IntensityMapping.to_model(prep.global_image))
        grid = plan.patch_grid
        tiles = [(i, j) for i, j in grid.raster() if prep.breast[grid.box(i, j).slices].any()]
        jobs = [(seed_i, t) for seed_i in range(len(config.options.seeds)) for t in tiles]
        chunks = [jobs[a : a + config.options.max_batch] for a in range(0, len(jobs), config.options.max_batch)]
        steps = len(spec.scheduler().timesteps) - start
        total = max(len(chunks) * steps, 1)
        acc = torch.zeros(len(config.options.seeds), grid.height, grid.width)
        weight = torch.zeros(grid.height, grid.width)
        for c, chunk in enumerate(chunks):
            boxes = [grid.box(*t) for _, t in chunk]
            cond = torch.stack([patch_conditioning(mid, g, b, plan) for b in boxes])
            x0 = denoise(
                unet_predictor(self.patch_unet, cond.to(self.device), config.options.max_batch, calls),
                spec,
                (len(chunk), 1, s, s),
                [tile_generator(config.options.seeds[si], "anomaly-patch", grid.index(*t)) for si, t in chunk],
                device=self.device,
                init_x0=torch.stack([crop(full, b) for b in boxes])[:, None],
                start_step=start,
                on_step=lambda n, _t, done=c * steps: reporter.step("anomaly", done + n, total),
            )
            for (si, _), b, tile in zip(chunk, boxes, x0.float().cpu(), strict=True):
                acc[si][b.slices] += tile[0]
                if si == 0:
                    weight[b.slices] += 1.0
        covered = weight > 0
        recons = []
        for si in range(len(config.options.seeds)):
            r = torch.where(covered, acc[si] / weight.clamp(min=1.0), torch.full_like(weight, -1.0))
            recons.append(IntensityMapping.from_model(r[:h, :w]).numpy().astype(np.float32))
        return recons
