"""The dual-view model: the CC and MLO views of one breast generated together by one 3-channel DDPM.

The paper (papers/dual-view-ddpm.txt) stores a pair as one RGB image, R = CC, G = MLO and
B = |CC - MLO|, so a plain unconditional DDPM learns both projections and how they relate. For
training every breast is turned to face one way (the paper mirrored left breasts to look like right
ones; this project's canonical side is chest wall left), so the model draws every breast facing
that way. The bundle's geometry records which (``chest_wall``), and the pipeline mirrors a pair
when the caller asks for the other laterality.

Generation is the paper's (a diffusers DDPM pipeline with any scheduler), then its post-processing:
clip at the 0.5th and 99.5th percentiles, rescale to [0, 1], split into CC and MLO. The clip is
taken over the three channels of a sample together: one affine map per sample keeps the CC and MLO
brightness as the model drew them relative to each other (a per-view clip would stretch each view
on its own). The third-channel check is measured on the raw samples, before any clip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from diffusers import UNet2DModel

from models.errors import BadInputError, BundleIntegrityError
from models.intensity import DEFAULT_INTENSITY, IntensityMapping
from models.metrics.dualview_stats import PERCENTILE_CLIP, third_channel_error
from models.progress import CancelFn, ProgressFn, Reporter
from models.sampling import CallStats, SamplerSpec, denoise, unet_predictor
from models.schedulers import NOISE_SCHEDULE, SAMPLERS

Laterality = Literal["L", "R"]
ChestWall = Literal["left", "right"]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: The one network of a dual-view bundle: 3 channels in (R, G, B), 3 channels of noise out.
NETWORK = "dualview"
STAGE = "dualview"
#: Paper default resolution; a bundle's network config overrides it.
DEFAULT_SIZE = 256


# -- channel encoding -----------------------------------------------------------------------------
def encode_pair(cc: ArrayT, mlo: ArrayT) -> ArrayT:
    """(…, H, W) CC and MLO in [0, 1] -> (…, 3, H, W): R = CC, G = MLO, B = |CC - MLO| (numpy or torch)."""
    if cc.shape != mlo.shape:
        raise BadInputError(f"CC {tuple(cc.shape)} and MLO {tuple(mlo.shape)} must have the same size")
    stack = torch.stack if isinstance(cc, torch.Tensor) else np.stack
    return stack([cc, mlo, abs(cc - mlo)], -3)


def decode_pair(rgb: ArrayT) -> tuple[ArrayT, ArrayT]:
    """(…, 3, H, W) -> (CC, MLO): the R and G channels. B carries no extra information and is dropped."""
    if rgb.shape[-3] != 3:
        raise BadInputError(f"expected 3 channels (R = CC, G = MLO, B = |CC - MLO|), got shape {tuple(rgb.shape)}")
    return rgb[..., 0, :, :], rgb[..., 1, :, :]


# -- post-processing ------------------------------------------------------------------------------
def postprocess(rgb: np.ndarray, clip: IntensityMapping = PERCENTILE_CLIP) -> np.ndarray:
    """The paper's clean-up of each generated sample: clip at the 0.5th/99.5th percentiles, rescale to [0, 1].

    ``rgb`` is (3, H, W) or (N, 3, H, W) in [0, 1]; percentiles are per sample over its three channels.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim == 3:
        return clip.normalize_raw(rgb)
    return np.stack([clip.normalize_raw(sample) for sample in rgb])


def chest_wall_side(laterality: Laterality) -> ChestWall:
    """Where the chest wall sits in a standard mammogram display: right breast on the right, left on the left.

    (DICOM PatientOrientation R-CC is P\\L: columns run toward posterior, the chest wall.)
    """
    if laterality not in ("L", "R"):
        raise BadInputError(f"laterality must be 'L' or 'R', got {laterality!r}")
    return "right" if laterality == "R" else "left"


def orient(image: ArrayT, laterality: Laterality | None, generated_chest_wall: ChestWall) -> ArrayT:
    """Mirror a generated view (…, H, W) so it shows a ``laterality`` breast; None keeps it as generated."""
    if laterality is None or chest_wall_side(laterality) == generated_chest_wall:
        return image
    return torch.flip(image, dims=(-1,)) if isinstance(image, torch.Tensor) else np.ascontiguousarray(image[..., ::-1])


# -- the pipeline ---------------------------------------------------------------------------------
@dataclass
class DualViewResult:
    """CC/MLO pairs, post-processed and oriented; ``rgb`` keeps the raw samples for inspection."""

    cc: np.ndarray  # (N, H, W) float32 in [0, 1]
    mlo: np.ndarray  # (N, H, W) float32 in [0, 1]
    rgb: np.ndarray  # (N, 3, H, W) model output in [0, 1], as generated (no clip, no mirroring)
    seeds: list[int]
    laterality: list[Laterality | None]
    third_channel_error: list[float]  # mean |B - |R - G|| per raw sample
    stats: dict[str, Any] = field(default_factory=dict)


class DualViewPipeline:
    """One unconditional 3-channel DDPM, sampled by the shared denoiser (`models.sampling.denoise`).

    That denoiser is the MAMBO tiles' too; here it runs with no conditioning and no known pixels, on
    whole 3-channel images, with one generator per sample so batching never changes a sample.
    """

    def __init__(
        self,
        unet: UNet2DModel | torch.nn.Module,
        schedule: dict[str, Any] | None = None,
        intensity: IntensityMapping = DEFAULT_INTENSITY,
        *,
        chest_wall: ChestWall = "left",
        name: str = "dualview",
        version: str = "",
    ) -> None:
        cfg = unet.config
        if cfg.in_channels != 3 or cfg.out_channels != 3:
            raise BundleIntegrityError(
                f"the dual-view network must map 3 channels to 3, got {cfg.in_channels} -> {cfg.out_channels}"
            )
        if chest_wall not in ("left", "right"):
            raise BundleIntegrityError(f"chest_wall must be 'left' or 'right', got {chest_wall!r}")
        self.unet = unet
        self.schedule = {**NOISE_SCHEDULE, **(schedule or {})}
        self.intensity = intensity
        self.chest_wall: ChestWall = chest_wall
        self.name, self.version = name, version
        size = cfg.sample_size or DEFAULT_SIZE
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)

    @classmethod
    def from_bundle(
        cls, bundle_or_path: Any, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32
    ) -> DualViewPipeline:
        """Load a ``kind: dualview`` bundle (verified) and its one network ``dualview`` onto ``device``."""
        from models.acceleration import parse_dtype
        from models.bundle import load_bundle

        bundle = load_bundle(bundle_or_path) if isinstance(bundle_or_path, str | os.PathLike) else bundle_or_path
        if bundle.kind != "dualview":
            raise BundleIntegrityError(f"{bundle.path} is a {bundle.kind!r} bundle, not a dual-view one")
        unet = bundle.load_network(NETWORK, device=device, dtype=parse_dtype(dtype)).eval()
        manifest = bundle.manifest
        geometry = manifest.get("geometry") or {}
        return cls(
            unet,
            schedule=manifest.get("schedule"),
            intensity=IntensityMapping.from_dict(manifest.get("intensity") or {}),
            chest_wall=geometry.get("chest_wall", "left"),
            name=bundle.name,
            version=bundle.version,
        )

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def __call__(
        self,
        count: int = 1,
        *,
        seed: int = 0,
        num_inference_steps: int = 50,
        sampler: str = "ddim",
        eta: float = 0.0,
        laterality: Laterality | Sequence[Laterality | None] | None = None,
        batch_size: int = 8,
        callback: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> DualViewResult:
        """Generate ``count`` pairs; sample i uses seed ``seed + i``, so batching never changes a sample.

        ``laterality``: one value for all pairs, one per pair, or None (as generated). Raises
        BadInputError for bad parameters and CancelledError between steps when ``cancel()`` is true.
        """
        lats = self._check(count, num_inference_steps, sampler, eta, batch_size, laterality)
        seeds = [seed + i for i in range(count)]
        spec = SamplerSpec(sampler, num_inference_steps, eta, self.schedule)
        reporter = Reporter(callback, cancel, {STAGE: float(count * num_inference_steps)})
        calls = CallStats()
        n_chunks = -(-count // batch_size)
        t0 = time.perf_counter()
        # 1. reverse diffusion, batch by batch: x_T ~ N(0, I) -> x_0 for all three channels at once.
        x0 = []
        for c in range(n_chunks):

            def on_step(n: int, total: int, c: int = c) -> None:
                reporter.step(STAGE, c * total + n, n_chunks * total)

            x0.append(self._sample(seeds[c * batch_size : (c + 1) * batch_size], spec, batch_size, calls, on_step))
        reporter.finish_stage(STAGE)
        seconds = time.perf_counter() - t0

        # 2. model range -> [0, 1]; the paper's percentile clip; split into CC and MLO; restore laterality.
        rgb = self.intensity.from_model(torch.cat(x0)).cpu().numpy().astype(np.float32)
        cc, mlo = decode_pair(postprocess(rgb))
        cc = np.stack([orient(v, lat, self.chest_wall) for v, lat in zip(cc, lats, strict=True)])
        mlo = np.stack([orient(v, lat, self.chest_wall) for v, lat in zip(mlo, lats, strict=True)])
        stats = {
            "model_evaluations": calls.model_evaluations,
            "sequential_model_calls": calls.sequential_calls,
            "seconds": round(seconds, 3),
            "seconds_per_pair": round(seconds / count, 3),
            "sampler": sampler,
            "num_inference_steps": num_inference_steps,
            "size": [self.height, self.width],
            "device": str(self.device),
        }
        return DualViewResult(cc, mlo, rgb, seeds, lats, [third_channel_error(s) for s in rgb], stats)

    def _sample(
        self,
        seeds: list[int],
        spec: SamplerSpec,
        max_batch: int,
        calls: CallStats,
        on_step: Any,
    ) -> torch.Tensor:
        """Reverse diffusion of one batch with the shared denoiser (no conditioning, no known pixels):
        x_T ~ N(0, I) per sample, then predict the noise of all three channels and step, T times."""
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        predict = unet_predictor(self.unet, None, max_batch, calls)
        shape = (len(seeds), 3, self.height, self.width)
        return denoise(predict, spec, shape, generators, device=self.device, on_step=on_step)

    def _check(
        self,
        count: int,
        steps: int,
        sampler: str,
        eta: float,
        batch_size: int,
        laterality: Laterality | Sequence[Laterality | None] | None,
    ) -> list[Laterality | None]:
        if count < 1:
            raise BadInputError(f"count must be at least 1, got {count}")
        if steps < 1 or steps > self.schedule["num_train_timesteps"]:
            raise BadInputError(f"num_inference_steps must be in 1..{self.schedule['num_train_timesteps']}")
        if sampler not in SAMPLERS:
            raise BadInputError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if batch_size < 1:
            raise BadInputError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= eta <= 1.0:
            raise BadInputError(f"eta must be in [0, 1], got {eta}")
        lats = [laterality] * count if laterality is None or isinstance(laterality, str) else list(laterality)
        if len(lats) != count:
            raise BadInputError(f"got {len(lats)} lateralities for {count} pairs")
        for lat in lats:
            if lat is not None:
                chest_wall_side(lat)  # validates
        return lats
