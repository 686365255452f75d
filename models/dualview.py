"""The dual-view model: the CC and MLO views of one breast generated together by one 3-channel DDPM.

The paper (Garza-Abdala et al., a dual-view DDPM; docs/DUALVIEW.md) stores a pair as one RGB image, R = CC, G = MLO and
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

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from diffusers import UNet2DModel

from models.bundle import BundleRef, open_bundle
from models.devices import Device
from models.errors import BadInputError, BundleIntegrityError
from models.intensity import IntensityMapping
from models.metrics.dualview_stats import PERCENTILE_CLIP, third_channel_error
from models.options import SamplingOptions, default_options
from models.progress import CancelFn, ProgressFn, Reporter
from models.requests import GenerationRequest, Laterality, chest_wall_side
from models.sampling import CallStats, SamplerSpec, denoise, tile_generator, unet_predictor
from models.schedulers import NOISE_SCHEDULE

ChestWall = Literal["left", "right"]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: The one network of a dual-view bundle: 3 channels in (R, G, B), 3 channels of noise out.
NETWORK = "dualview"
STAGE = "dualview"
#: Paper default resolution; a bundle's network config overrides it.
DEFAULT_SIZE = 256
#: A dual-view request's sampling when it names none (models.options.SAMPLING_DEFAULTS).
DUALVIEW_OPTIONS = default_options("dualview")


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
        self.chest_wall: ChestWall = chest_wall
        self.name, self.version = name, version
        size = cfg.sample_size or DEFAULT_SIZE
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)

    @classmethod
    def from_bundle(
        cls, bundle: BundleRef, device: Device = "cpu", dtype: torch.dtype = torch.float32
    ) -> DualViewPipeline:
        """A ``kind: dualview`` bundle (verified) with its one network ``dualview`` on ``device``."""
        b = open_bundle(bundle, "dualview")
        return cls(
            b.load_network(NETWORK, device, dtype),
            schedule=b.schedule,
            chest_wall=b.geometry.get("chest_wall", "left"),
            name=b.name,
            version=b.version,
        )

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def run(
        self, request: GenerationRequest, callback: ProgressFn | None = None, cancel: CancelFn | None = None
    ) -> DualViewResult:
        """A generation request (``model: dualview``): one pair per seed, shown as ``request.laterality``."""
        if request.model != "dualview":
            raise BadInputError(f"a {request.model} request cannot run on the dual-view model")
        return self(request.options, laterality=request.laterality, callback=callback, cancel=cancel)

    @torch.no_grad()
    def __call__(
        self,
        options: SamplingOptions = DUALVIEW_OPTIONS,
        *,
        laterality: Laterality | Sequence[Laterality | None] | None = None,
        callback: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> DualViewResult:
        """One pair per seed of ``options``, ``options.max_batch`` samples per network call; every sample
        has its own generator, so batching never changes a sample.

        ``laterality``: one value for all pairs, one per pair, or None (as generated). Raises
        BadInputError for bad parameters and CancelledError between steps when ``cancel()`` is true.
        """
        seeds, batch_size = list(options.seeds), options.max_batch
        count = len(seeds)
        lats = self._lateralities(count, laterality)
        spec = SamplerSpec(options, self.schedule)
        reporter = Reporter(callback, cancel, {STAGE: float(count * options.steps)})
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
        rgb = IntensityMapping.from_model(torch.cat(x0)).cpu().numpy().astype(np.float32)
        cc, mlo = decode_pair(postprocess(rgb))
        cc = np.stack([orient(v, lat, self.chest_wall) for v, lat in zip(cc, lats, strict=True)])
        mlo = np.stack([orient(v, lat, self.chest_wall) for v, lat in zip(mlo, lats, strict=True)])
        stats = {
            "model_evaluations": calls.model_evaluations,
            "sequential_model_calls": calls.sequential_calls,
            "seconds": round(seconds, 3),
            "seconds_per_pair": round(seconds / count, 3),
            "sampler": options.sampler,
            "steps": options.steps,
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
        generators = [tile_generator(s, STAGE, 0) for s in seeds]
        predict = unet_predictor(self.unet, None, max_batch, calls)
        shape = (len(seeds), 3, self.height, self.width)
        return denoise(predict, spec, shape, generators, device=self.device, on_step=on_step)

    @staticmethod
    def _lateralities(
        count: int, laterality: Laterality | Sequence[Laterality | None] | None
    ) -> list[Laterality | None]:
        lats = [laterality] * count if laterality is None or isinstance(laterality, str) else list(laterality)
        if len(lats) != count:
            raise BadInputError(f"got {len(lats)} lateralities for {count} pairs")
        for lat in lats:
            if lat is not None:
                chest_wall_side(lat)  # validates
        return lats  # type: ignore[return-value]
