"""Noise schedule, the three samplers, and the channel-0 training loss (paper Algorithm 1).

The schedule is data (``NOISE_SCHEDULE``, stored in every bundle manifest); samplers are built
fresh from it per batch, because multistep schedulers keep per-run history.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from models.options import SAMPLERS, Sampler

#: The paper's forward process: 1000 linear betas 1e-4..0.02, epsilon prediction.
NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}


def make_scheduler(sampler: Sampler | str, schedule: dict[str, Any] | None = None) -> SchedulerMixin:
    """A fresh diffusers scheduler for ``sampler`` on ``schedule`` (default: the paper's).

    Every sampler starts at t = 999 ("trailing"/"linspace" spacing), never clips x0 (the reference
    does not), and DDPM/DDIM draw their stochastic noise from the generators passed to ``step``.
    """
    base = {**NOISE_SCHEDULE, **(schedule or {})}
    if sampler == "ddpm":
        sch = DDPMScheduler(**base, clip_sample=False, timestep_spacing="trailing", variance_type="fixed_small")
    elif sampler == "ddim":
        sch = DDIMScheduler(**base, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    elif sampler == "dpmsolver":
        sch = DPMSolverMultistepScheduler(
            **base, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace"
        )
    else:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    return sch


def scheduler_step(
    scheduler: SchedulerMixin,
    model_output: torch.Tensor,
    timestep: torch.Tensor,
    sample: torch.Tensor,
    generators: list[torch.Generator] | None,
    eta: float = 0.0,
) -> torch.Tensor:
    """x_t -> x_{t-1}. One generator per batch element keeps per-tile noise independent of batching;
    ``eta`` is DDIM's (the other samplers have none)."""
    kwargs: dict[str, Any] = {"generator": generators, "return_dict": False}
    if isinstance(scheduler, DDIMScheduler):
        kwargs["eta"] = eta
    return scheduler.step(model_output, timestep, sample, **kwargs)[0]


@lru_cache(maxsize=8)
def _training_scheduler(items: tuple[tuple[str, Any], ...]) -> DDPMScheduler:
    return DDPMScheduler(**dict(items))


def training_scheduler(schedule: dict[str, Any] | None = None) -> DDPMScheduler:
    """The forward process q(x_t | x_0) of a schedule (shared, read-only: only ``add_noise`` is used)."""
    return _training_scheduler(tuple(sorted({**NOISE_SCHEDULE, **(schedule or {})}.items())))


def alphas_cumprod(schedule: dict[str, Any] | None = None) -> torch.Tensor:
    """abar_t of the training schedule."""
    return training_scheduler(schedule).alphas_cumprod


def channel0_loss(
    unet: UNet2DModel,
    x0: torch.Tensor,
    cond: torch.Tensor | None,
    timesteps: torch.Tensor,
    noise: torch.Tensor | None = None,
    schedule: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Algorithm 1: noise only the denoised channels, keep the conditioning clean, MSE on the denoised channels.

    x0: (B, C0, s, s) targets in model range; cond: (B, Cc, s, s) clean context or None;
    timesteps: (B,) ints in [0, T). Returns the scalar loss.
    """
    noise = torch.randn_like(x0) if noise is None else noise
    x_t = training_scheduler(schedule).add_noise(x0, noise, timesteps)
    inputs = x_t if cond is None else torch.cat([x_t, cond], dim=1)
    pred = unet(inputs, timesteps).sample
    return F.mse_loss(pred, noise)
