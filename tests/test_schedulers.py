"""Samplers start from pure noise at t=999 and the training loss sees only channel 0."""

import pytest
import torch

from models.schedulers import NOISE_SCHEDULE, alphas_cumprod, channel0_loss, make_scheduler
from models.unet import build_unet


def test_noise_schedule_is_the_papers_linear_1000_steps():
    assert NOISE_SCHEDULE["num_train_timesteps"] == 1000
    assert (NOISE_SCHEDULE["beta_start"], NOISE_SCHEDULE["beta_end"]) == (1e-4, 0.02)
    abar = alphas_cumprod()
    assert abar[0] == pytest.approx(1 - 1e-4) and abar[-1] < 1e-4


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver"])
def test_every_sampler_starts_at_the_last_training_timestep(sampler):
    sch = make_scheduler(sampler)
    sch.set_timesteps(20)
    assert int(sch.timesteps[0]) == 999 and len(sch.timesteps) == 20
    assert all(int(a) > int(b) for a, b in zip(sch.timesteps[:-1], sch.timesteps[1:], strict=True))


def test_ddpm_with_1000_steps_visits_every_timestep():
    sch = make_scheduler("ddpm")
    sch.set_timesteps(1000)
    assert sch.timesteps.tolist() == list(range(999, -1, -1))


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_scheduler("euler")


def test_channel0_loss_ignores_the_conditioning_as_a_target():
    """The loss equals MSE(pred, noise) on channel 0, with channels 1.. given clean to the network."""
    torch.manual_seed(0)
    unet = build_unet("tiny", in_channels=3)
    x0 = torch.rand(2, 1, 32, 32) * 2 - 1
    cond = torch.rand(2, 2, 32, 32) * 2 - 1
    t = torch.tensor([3, 800])
    noise = torch.randn_like(x0)
    loss = channel0_loss(unet, x0, cond, t, noise)
    abar = alphas_cumprod()[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    expected = ((unet(torch.cat([x_t, cond], 1), t).sample - noise) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert unet.conv_in.weight.grad[:, 1:].abs().sum() > 0  # the context channels feed the prediction
