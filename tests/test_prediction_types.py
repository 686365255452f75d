"""The schedule's prediction type, x0 clipping and Min-SNR weights, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler

from models.schedulers import (
    NOISE_SCHEDULE,
    RECIPE_SCHEDULE,
    alphas_cumprod,
    channel0_loss,
    clipped_model_output,
    full_schedule,
    loss_weights,
    make_scheduler,
    prediction_target,
    scheduler_step,
    snr,
)
from models.unet import build_unet

V = {"prediction_type": "v_prediction"}


def _abar(t: int) -> float:
    """abar_t of the paper's linear schedule, by hand (float64)."""
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    return math.prod(1 - b for b in betas[: t + 1])


def test_snr_matches_the_hand_computed_linear_schedule():
    t = torch.tensor([0, 10, 500, 999])
    expected = [_abar(int(i)) / (1 - _abar(int(i))) for i in t]
    assert snr(t).tolist() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weights_are_min_snr_gamma_over_snr_for_epsilon_and_over_snr_plus_one_for_v(gamma):
    t = torch.tensor([0, 100, 300, 600, 999])
    ratios = [_abar(int(i)) / (1 - _abar(int(i))) for i in t]
    eps = loss_weights(t, NOISE_SCHEDULE, gamma)
    v = loss_weights(t, V, gamma)
    assert eps.tolist() == pytest.approx([min(r, gamma) / r for r in ratios], rel=1e-4)
    assert v.tolist() == pytest.approx([min(r, gamma) / (r + 1) for r in ratios], rel=1e-4)
    assert eps[0] == pytest.approx(gamma / ratios[0], rel=1e-4)  # clipped at low noise
    assert eps[-1] == pytest.approx(1.0)  # untouched at high noise (SNR < gamma)
    assert loss_weights(t, NOISE_SCHEDULE, 0.0) is None


def test_v_target_is_sqrt_abar_eps_minus_sqrt_one_minus_abar_x0():
    x0, eps, t = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.tensor([5, 400, 990])
    a = torch.tensor([_abar(int(i)) for i in t], dtype=torch.float32)[:, None, None, None]
    expected = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(prediction_target(x0, eps, t, V), expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(prediction_target(x0, eps, t, NOISE_SCHEDULE), eps)


def test_the_loss_of_a_network_that_predicts_the_target_is_zero_and_weights_scale_it():
    torch.manual_seed(0)
    unet = build_unet("tiny", 1, 1, 32)
    x0, eps, t = torch.rand(2, 1, 32, 32) * 2 - 1, torch.randn(2, 1, 32, 32), torch.tensor([10, 900])
    plain = channel0_loss(unet, x0, None, t, eps, V)
    weighted = channel0_loss(unet, x0, None, t, eps, V, min_snr_gamma=5.0)
    w = loss_weights(t, V, 5.0)
    pred = unet(
        alphas_cumprod().sqrt()[t, None, None, None] * x0 + (1 - alphas_cumprod()[t]).sqrt()[:, None, None, None] * eps,
        t,
    ).sample
    per = ((pred - prediction_target(x0, eps, t, V)) ** 2).mean(dim=(1, 2, 3))
    assert plain.item() == pytest.approx(per.mean().item(), rel=1e-4)
    assert weighted.item() == pytest.approx((per * w).mean().item(), rel=1e-4)


def test_clipping_equals_diffusers_ddim_with_clip_sample_and_the_clipped_model_output():
    """One clip rule for every sampler: re-deriving the output from the clipped x0 is exactly what
    DDIM does with clip_sample=True, use_clipped_model_output=True."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 8, generator=g) * 3
    out = torch.randn(2, 1, 8, 8, generator=g) * 3
    for prediction_type in ("epsilon", "v_prediction"):
        ours = make_scheduler("ddim", {"prediction_type": prediction_type, "clip_sample": True})
        ref = DDIMScheduler(
            **{k: NOISE_SCHEDULE[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")},
            prediction_type=prediction_type,
            clip_sample=True,
            set_alpha_to_one=True,
            timestep_spacing="trailing",
        )
        ours.set_timesteps(10)
        ref.set_timesteps(10)
        t = ours.timesteps[3]
        expected = ref.step(out, t, x, eta=0.0, use_clipped_model_output=True, return_dict=False)[0]
        torch.testing.assert_close(scheduler_step(ours, out, t, x, None), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver"])
def test_clipped_x0_lies_in_the_model_range_and_unclipped_outputs_pass_through(sampler):
    sch = make_scheduler(sampler, RECIPE_SCHEDULE)
    sch.set_timesteps(10)
    t = sch.timesteps[0]
    abar = alphas_cumprod()[int(t)]
    x = torch.randn(1, 1, 8, 8)
    v = torch.randn(1, 1, 8, 8) * 5
    clipped = clipped_model_output(sch, v, t, x)
    x0 = abar.sqrt() * x - (1 - abar).sqrt() * clipped
    assert x0.abs().max() <= 1 + 1e-5
    inside = torch.zeros(1, 1, 8, 8)  # x0 = 0 everywhere: clipping must not change anything
    v_inside = (abar.sqrt() * x - inside) / (1 - abar).sqrt()
    torch.testing.assert_close(clipped_model_output(sch, v_inside, t, x), v_inside, atol=1e-5, rtol=1e-5)


def test_old_manifests_keep_the_papers_reading_and_bad_types_are_refused():
    assert full_schedule({"prediction_type": "epsilon"})["clip_sample"] is False
    assert make_scheduler("ddim", {}).clip_x0 is False
    assert make_scheduler("ddim", RECIPE_SCHEDULE).config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="prediction_type"):
        make_scheduler("ddim", {"prediction_type": "sample"})
