"""The one tile denoiser: stages 1-3, the dual-view model and anomaly maps all sample through here.

Inpainting by replacement (paper §3.2.2): before every model call, the known pixels of the
denoised channels are replaced by their forward-noised values at the scheduler's CURRENT timestep,
sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with one eps per tile drawn once (as the reference does).
Conditioning channels go to the network clean at every step.

The one seeding rule: every tile (and every dual-view sample, every anomaly reconstruction) owns a
``torch.Generator`` seeded from (seed, stage, index) by :func:`tile_generator`, which draws, in
order, x_T, the known-region noise and the scheduler's stochastic noise, so a result does not
depend on which batch it was denoised in (wavefront == raster, lock-step == one at a time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from models.errors import BadInputError
from models.options import SamplingOptions
from models.schedulers import NOISE_SCHEDULE, make_scheduler, scheduler_step
from models.unet import null_class

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> predicted noise
StepCallback = Callable[[int, int], None]  # (steps done, steps total) of this call


@dataclass(frozen=True)
class SamplerSpec:
    """A request's (already validated) sampling options on a bundle's noise schedule: what every
    denoising loop needs. Built once per request by the pipeline and passed down to every stage."""

    options: SamplingOptions
    schedule: dict[str, Any] | None = None
    label: int | None = None  # class index for class-conditional networks (None: unconditional)

    def __post_init__(self) -> None:
        train_steps = int({**NOISE_SCHEDULE, **(self.schedule or {})}["num_train_timesteps"])
        if self.options.steps > train_steps:
            raise BadInputError(f"steps must be at most {train_steps} (the bundle's schedule), got {self.steps}")

    @property
    def steps(self) -> int:
        return self.options.steps

    def scheduler(self) -> SchedulerMixin:
        """A fresh scheduler with its timesteps set (multistep history must not leak between batches)."""
        sch = make_scheduler(self.options.sampler, self.schedule)
        sch.set_timesteps(self.options.steps)
        return sch


@dataclass
class CallStats:
    """model_evaluations: tile-steps through a network; sequential_calls: network invocations (chunks count)."""

    model_evaluations: int = 0
    sequential_calls: int = 0


def tile_generator(seed: int, stage: str, index: int) -> torch.Generator:
    """A CPU generator for one tile, seeded by a stable hash of (seed, stage, index): CPU draws are the
    same on every device, so a seed means the same image on CPU and GPU (up to arithmetic)."""
    digest = hashlib.sha256(f"{int(seed)}:{stage}:{int(index)}".encode()).digest()
    return torch.Generator("cpu").manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def start_index_for_timestep(spec: SamplerSpec, t_start: int) -> int:
    """Index of the first scheduled timestep <= t_start (anomaly maps: noise to lambda, denoise from there)."""
    timesteps = spec.scheduler().timesteps
    for n, t in enumerate(timesteps.tolist()):
        if t <= t_start:
            return n
    return len(timesteps) - 1


def unet_predictor(
    unet: UNet2DModel,
    cond: torch.Tensor | None,
    max_batch: int,
    stats: CallStats | None = None,
    label: int | None = None,
    guidance_scale: float = 1.0,
) -> Predictor:
    """(x_t, t) -> prediction of the denoised channels, cond appended clean, in chunks of max_batch.

    Class-conditional networks get ``label`` (None: their "no class" label). With a label and
    ``guidance_scale`` w != 1, classifier-free guidance: u + w (c - u) from the conditional and the
    unconditional prediction of each tile, so every stitching mode guides every tile the same way
    (w = 1 is exactly the conditional model). Classless networks ignore both.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    dtype = unet.dtype
    null = null_class(unet)
    if null is not None and label is not None and not 0 <= label < null:
        raise BadInputError(f"class index {label} is not one of this network's {null} classes")
    guided = null is not None and label is not None and guidance_scale != 1.0
    cls = null if label is None else label

    def net(inp: torch.Tensor, t: torch.Tensor, labels: list[int] | None) -> torch.Tensor:
        if labels is None:
            return unet(inp.to(dtype), t.to(inp.device)).sample.float()
        class_labels = torch.tensor(labels, device=inp.device)
        return unet(inp.to(dtype), t.to(inp.device), class_labels=class_labels).sample.float()

    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        outs = []
        for a in range(0, x_t.shape[0], max_batch):
            b = min(a + max_batch, x_t.shape[0])
            inp = x_t[a:b] if cond is None else torch.cat([x_t[a:b], cond[a:b]], dim=1)
            n = b - a
            if guided:
                both = net(torch.cat([inp, inp]), t, [cls] * n + [null] * n)  # type: ignore[list-item]
                c, u = both[:n], both[n:]
                outs.append(u + guidance_scale * (c - u))
            else:
                outs.append(net(inp, t, None if null is None else [cls] * n))  # type: ignore[list-item]
            if stats is not None:
                stats.model_evaluations += n * (2 if guided else 1)
                stats.sequential_calls += 1
        return torch.cat(outs)

    return predict


@torch.no_grad()
def denoise(
    predict: Predictor,
    spec: SamplerSpec,
    shape: tuple[int, ...],
    generators: list[torch.Generator],
    *,
    device: torch.device | str = "cpu",
    known_x0: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    init_x0: torch.Tensor | None = None,
    start_step: int = 0,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Sample x0 of ``shape`` (B, C, h, w) in model range; float32 throughout the scheduler arithmetic.

    known_x0/known_mask: pixels fixed by replacement every step (mask (B, 1, h, w) bool);
    init_x0 + start_step: start from init_x0 noised to the start_step-th scheduled timestep.
    """
    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per batch element ({shape[0]}), got {len(generators)}")
    sch = spec.scheduler()
    timesteps = sch.timesteps[start_step:]
    noise = randn_tensor(shape, generator=generators, device=torch.device(device), dtype=torch.float32)
    known_noise = randn_tensor(shape, generator=generators, device=torch.device(device), dtype=torch.float32)
    if init_x0 is None:
        x = noise * sch.init_noise_sigma
    else:
        x = sch.add_noise(init_x0.float().to(device), noise, timesteps[:1])
    if known_mask is not None:
        known_mask = known_mask.to(device)
        known_x0 = known_x0.float().to(device)
    for n, t in enumerate(timesteps):
        # 1. overlap by replacement: known pixels at the current timestep's noise level
        if known_mask is not None:
            x = torch.where(known_mask, sch.add_noise(known_x0, known_noise, t.reshape(1)), x)
        # 2. predict the noise of the denoised channels (conditioning appended clean by the predictor)
        eps = predict(sch.scale_model_input(x, t), t)
        # 3. x_t -> x_{t-1}, with each element's stochastic noise from its own generator
        x = scheduler_step(sch, eps, t, x, generators, spec.options.eta)
        if on_step is not None:
            on_step(n + 1, len(timesteps))
    return x
