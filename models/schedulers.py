"""Noise schedule, the three samplers, and the channel-0 training loss (paper Algorithm 1).

The schedule is data (stored in every bundle manifest); samplers are built fresh from it per
batch, because multistep schedulers keep per-run history. Two fields decide how a network's output
is read and are therefore part of the schedule, honoured by every sampler and path:

- ``prediction_type``: ``epsilon`` (the papers) or ``v_prediction`` (v = sqrt(abar) eps -
  sqrt(1 - abar) x0, Salimans & Ho 2022): v stays informative at high noise, where an epsilon
  network's x0 estimate is noise divided by a tiny sqrt(abar).
- ``clip_sample``: clip the predicted x0 to [-1, 1] (our model range) before each update. The
  reference does not (its intensity scale is not [-1, 1]); bundles that do not say keep that.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from models.options import SAMPLERS, Sampler

PREDICTION_TYPES = ("epsilon", "v_prediction")

#: The paper's forward process: 1000 linear betas 1e-4..0.02, epsilon prediction, x0 never clipped.
NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}

#: What new training runs record by default: the same forward process, v-prediction, x0 clipped
#: to the model range (docs/TRAINING.md has the measurements behind both choices).
RECIPE_SCHEDULE: dict[str, Any] = {**NOISE_SCHEDULE, "prediction_type": "v_prediction", "clip_sample": True}

#: The keys of the forward process q(x_t | x_0) (and of the training target).
FORWARD_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")


def full_schedule(schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    """``schedule`` over the paper's defaults, checked: a bundle that does not say keeps the paper's reading."""
    full = {**NOISE_SCHEDULE, **(schedule or {})}
    if full["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {full['prediction_type']!r}; choose one of {PREDICTION_TYPES}")
    full["clip_sample"] = bool(full["clip_sample"])
    return full


class TrailingDDIMScheduler(DDIMScheduler):
    """diffusers' DDIM, stepping from each timestep of its schedule to the next one of the same schedule.

    ``DDIMScheduler.step`` goes from t to t - 1000 // n. With "trailing" spacing the schedule's stride is
    1000 / n, so when n does not divide 1000 (150 -- the reference code's count --, 120, 30, ...) some
    steps stop one timestep short of the next scheduled one: the sample keeps more noise than the network
    is told at the next step, and the residue adds up. Measured on the demo dual-view bundle (fp32,
    4 pairs): background sd 0.068 at 150 steps, 0.042 at 120, 0.028 at 100/125/200/250. For every n that
    divides 1000 the next scheduled timestep is t - 1000 // n, so those results are unchanged.
    """

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The schedule's next timestep after ``timestep`` (-1 after the last one: the clean image)."""
        t = int(timestep)
        later = (self.timesteps < t).nonzero()
        return int(self.timesteps[later[0, 0]]) if len(later) else -1

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Any:
        """DDIM (Song et al. 2021, eq. 12) as diffusers writes it, term for term, with the right previous timestep."""
        from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
        from diffusers.utils.torch_utils import randn_tensor

        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        kind = self.config.prediction_type
        if kind == "epsilon":
            pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
            pred_epsilon = model_output
        elif kind == "sample":
            pred_original_sample = model_output
            pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
        elif kind == "v_prediction":
            pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
            pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
        else:
            raise ValueError(f"unknown prediction_type {kind!r}")
        if self.config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif self.config.clip_sample:
            limit = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-limit, limit)
        variance = self._get_variance(t, prev_t)
        std_dev_t = eta * variance ** (0.5)
        if use_clipped_model_output:
            pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
        pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
        prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
        if eta > 0:
            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                )
            prev_sample = prev_sample + std_dev_t * variance_noise
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)


def make_scheduler(sampler: Sampler | str, schedule: dict[str, Any] | None = None) -> SchedulerMixin:
    """A fresh diffusers scheduler for ``sampler`` on ``schedule`` (default: the paper's).

    Every sampler starts at t = 999 ("trailing"/"linspace" spacing), reads the network output as the
    schedule's ``prediction_type``, clips x0 to [-1, 1] in :func:`scheduler_step` when the schedule's
    ``clip_sample`` says so, and DDPM/DDIM draw their stochastic noise from the generators passed to ``step``.
    """
    full = full_schedule(schedule)
    base = {k: full[k] for k in FORWARD_KEYS}
    if sampler == "ddpm":
        sch = DDPMScheduler(**base, clip_sample=False, timestep_spacing="trailing", variance_type="fixed_small")
    elif sampler == "ddim":
        sch = TrailingDDIMScheduler(**base, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    elif sampler == "dpmsolver":
        sch = DPMSolverMultistepScheduler(
            **base, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace"
        )
    else:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    sch.clip_x0 = full["clip_sample"]  # read by scheduler_step: one clip rule for all three samplers
    return sch


def clipped_model_output(
    scheduler: SchedulerMixin, model_output: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor
) -> torch.Tensor:
    """The network output re-derived from its x0 estimate clipped to [-1, 1].

    Feeding this to any sampler equals clipping x0 inside it (DDPM's ``clip_sample``, DDIM's with
    ``use_clipped_model_output``, DPM-Solver++'s thresholding at 1), without the size limit of
    torch.quantile that diffusers' thresholding hits on whole 4k canvases.
    """
    abar = scheduler.alphas_cumprod[int(timestep)].to(device=sample.device, dtype=torch.float64)
    a, b = abar.sqrt(), (1.0 - abar).sqrt()
    x, out = sample.double(), model_output.double()
    if scheduler.config.prediction_type == "v_prediction":
        x0 = (a * x - b * out).clamp(-1.0, 1.0)
        return ((a * x - x0) / b).to(model_output.dtype)
    x0 = ((x - b * out) / a).clamp(-1.0, 1.0)
    return ((x - a * x0) / b).to(model_output.dtype)


def scheduler_step(
    scheduler: SchedulerMixin,
    model_output: torch.Tensor,
    timestep: torch.Tensor,
    sample: torch.Tensor,
    generators: list[torch.Generator] | None,
    eta: float = 0.0,
) -> torch.Tensor:
    """x_t -> x_{t-1}. One generator per batch element keeps per-tile noise independent of batching;
    ``eta`` is DDIM's (the other samplers have none); x0 is clipped where the schedule says so."""
    kwargs: dict[str, Any] = {"generator": generators, "return_dict": False}
    if isinstance(scheduler, DDIMScheduler):
        kwargs["eta"] = eta
    if getattr(scheduler, "clip_x0", False):
        model_output = clipped_model_output(scheduler, model_output, timestep, sample)
    return scheduler.step(model_output, timestep, sample, **kwargs)[0]


@lru_cache(maxsize=8)
def _training_scheduler(items: tuple[tuple[str, Any], ...]) -> DDPMScheduler:
    return DDPMScheduler(**dict(items))


def training_scheduler(schedule: dict[str, Any] | None = None) -> DDPMScheduler:
    """The forward process q(x_t | x_0) of a schedule (shared, read-only: ``add_noise``, ``get_velocity``)."""
    full = full_schedule(schedule)
    return _training_scheduler(tuple(sorted((k, full[k]) for k in FORWARD_KEYS)))


def alphas_cumprod(schedule: dict[str, Any] | None = None) -> torch.Tensor:
    """abar_t of the training schedule."""
    return training_scheduler(schedule).alphas_cumprod


def snr(timesteps: torch.Tensor, schedule: dict[str, Any] | None = None) -> torch.Tensor:
    """Signal-to-noise ratio abar_t / (1 - abar_t) at integer timesteps, in float64 from the betas
    (float32 abar loses 1 - abar_0 = 1e-4 to rounding; abar_999 is ~4e-5)."""
    abar = torch.cumprod(1.0 - training_scheduler(schedule).betas.double(), 0)[timesteps.long().cpu()]
    return (abar / (1.0 - abar)).to(timesteps.device)


def loss_weights(
    timesteps: torch.Tensor, schedule: dict[str, Any] | None = None, min_snr_gamma: float | None = None
) -> torch.Tensor | None:
    """Min-SNR-gamma weights (Hang et al., 2023) in the space the network predicts, or None (uniform).

    The x0-space weight min(SNR, gamma) becomes min(SNR, gamma) / SNR for an epsilon target and
    min(SNR, gamma) / (SNR + 1) for a v target (the MSE of each is SNR resp. SNR + 1 times x0's).
    """
    if not min_snr_gamma:
        return None
    ratio = snr(timesteps, schedule)
    clipped = torch.clamp(ratio, max=float(min_snr_gamma))
    if full_schedule(schedule)["prediction_type"] == "v_prediction":
        return (clipped / (ratio + 1.0)).float()
    return (clipped / ratio).float()


def prediction_target(
    x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, schedule: dict[str, Any] | None = None
) -> torch.Tensor:
    """What the network is trained to output: the noise, or v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    if full_schedule(schedule)["prediction_type"] == "v_prediction":
        return training_scheduler(schedule).get_velocity(x0, noise, timesteps)
    return noise


def channel0_loss(
    unet: UNet2DModel,
    x0: torch.Tensor,
    cond: torch.Tensor | None,
    timesteps: torch.Tensor,
    noise: torch.Tensor | None = None,
    schedule: dict[str, Any] | None = None,
    min_snr_gamma: float | None = None,
    class_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Algorithm 1: noise only the denoised channels, keep the conditioning clean, MSE on the denoised channels.

    x0: (B, C0, s, s) targets in model range; cond: (B, Cc, s, s) clean context or None;
    timesteps: (B,) ints in [0, T). The target is the schedule's (noise or v); ``min_snr_gamma``
    weights each example by Min-SNR; ``class_labels`` (B,) for class-conditional networks. Returns the scalar loss.
    """
    noise = torch.randn_like(x0) if noise is None else noise
    x_t = training_scheduler(schedule).add_noise(x0, noise, timesteps)
    inputs = x_t if cond is None else torch.cat([x_t, cond], dim=1)
    pred = (
        unet(inputs, timesteps) if class_labels is None else unet(inputs, timesteps, class_labels=class_labels)
    ).sample
    target = prediction_target(x0, noise, timesteps, schedule)
    weights = loss_weights(timesteps, schedule, min_snr_gamma)
    if weights is None:
        return F.mse_loss(pred, target)
    per_example = ((pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, pred.ndim)))
    return (per_example * weights.to(per_example.device)).mean()
