"""The generic tile denoiser: scheduler-correct replacement, per-tile noise, partial-noise starts."""

import pytest
import torch

from models.errors import BadInputError
from models.options import SamplingOptions
from models.sampling import SamplerSpec, denoise, start_index_for_timestep, tile_generator
from models.schedulers import alphas_cumprod


class Recorder:
    """A stand-in noise predictor that records what the sampler feeds the network."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, int]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_t.clone(), int(t)))
        return 0.5 * torch.tanh(x_t)  # any smooth function of x_t: the sampler must not care


def _second_draw(g: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    torch.randn((1, *shape), generator=g)  # x_T
    return torch.randn((1, *shape), generator=g)  # the known-region noise


def _spec(sampler: str, steps: int, eta: float = 0.0) -> SamplerSpec:
    return SamplerSpec(SamplingOptions(sampler, steps, eta))


def _gens(seed: int, n: int) -> list[torch.Generator]:
    return [tile_generator(seed, "test", i) for i in range(n)]


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", 25), ("ddim", 20), ("dpmsolver", 20)])
def test_known_pixels_are_forward_noised_to_the_timestep_the_model_sees(sampler, steps):
    spec = _spec(sampler, steps, eta=1.0 if sampler == "ddim" else 0.0)
    shape = (2, 1, 16, 16)
    known_x0 = torch.rand(shape) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, :4] = True  # top rows inherited from a neighbour
    mask[1, :, :, :4] = True
    rec = Recorder()
    denoise(rec, spec, shape, _gens(0, 2), known_x0=known_x0, known_mask=mask)
    # the sampler's draws per tile: x_T first, then the known-region noise
    eps = torch.cat([_second_draw(g, shape[1:]) for g in _gens(0, 2)])
    abar = alphas_cumprod()
    assert len(rec.calls) == steps
    for x_t, t in rec.calls:
        expected = abar[t].sqrt() * known_x0 + (1 - abar[t]).sqrt() * eps
        assert torch.allclose(x_t[mask.expand_as(x_t)], expected[mask.expand_as(x_t)], atol=1e-5), (sampler, t)
        assert not torch.allclose(x_t[~mask], expected[~mask], atol=1e-2)  # unknown pixels are free


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver"])
def test_a_tile_denoised_in_a_batch_equals_the_tile_denoised_alone(sampler):
    """Per-tile generators: x_T, known noise and step noise do not depend on the batch."""
    spec = _spec(sampler, 10, eta=1.0)
    shape = (3, 1, 8, 8)
    known = torch.rand(shape)
    mask = torch.rand(3, 1, 8, 8) > 0.5
    batch = denoise(Recorder(), spec, shape, _gens(7, 3), known_x0=known, known_mask=mask)
    for i in range(3):
        alone = denoise(
            Recorder(), spec, (1, 1, 8, 8), [_gens(7, 3)[i]], known_x0=known[i : i + 1], known_mask=mask[i : i + 1]
        )
        assert torch.allclose(batch[i], alone[0], atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


def test_partial_noising_starts_from_the_given_image_at_lambda():
    spec = _spec("ddim", 50)
    start = start_index_for_timestep(spec, 700)
    t_start = int(spec.scheduler().timesteps[start])
    assert t_start <= 700 and int(spec.scheduler().timesteps[start - 1]) > 700
    init = torch.rand(1, 1, 8, 8) * 2 - 1
    rec = Recorder()
    denoise(rec, spec, (1, 1, 8, 8), _gens(1, 1), init_x0=init, start_step=start)
    assert len(rec.calls) == 50 - start and rec.calls[0][1] == t_start
    noise = torch.randn((1, 1, 8, 8), generator=_gens(1, 1)[0])
    abar = alphas_cumprod()[t_start]
    assert torch.allclose(rec.calls[0][0], abar.sqrt() * init + (1 - abar).sqrt() * noise, atol=1e-5)


def test_progress_callback_sees_every_step():
    seen = []
    denoise(Recorder(), _spec("dpmsolver", 7), (1, 1, 4, 4), _gens(0, 1), on_step=lambda n, t: seen.append((n, t)))
    assert seen == [(n, 7) for n in range(1, 8)]


def test_tile_generators_are_stable_and_distinct():
    a = torch.randn(4, generator=tile_generator(1, "patch", 3))
    assert torch.equal(a, torch.randn(4, generator=tile_generator(1, "patch", 3)))
    assert not torch.equal(a, torch.randn(4, generator=tile_generator(1, "patch", 4)))
    assert not torch.equal(a, torch.randn(4, generator=tile_generator(1, "local", 3)))
    assert not torch.equal(a, torch.randn(4, generator=tile_generator(2, "patch", 3)))


def test_eta_reaches_the_ddim_step():
    """eta travels with the options to every step: 0 is deterministic given x_T, 1 adds fresh noise."""
    shape = (1, 1, 8, 8)
    runs = {eta: denoise(Recorder(), _spec("ddim", 10, eta), shape, _gens(3, 1)) for eta in (0.0, 1.0)}
    assert not torch.allclose(runs[0.0], runs[1.0], atol=1e-3)
    assert torch.equal(runs[1.0], denoise(Recorder(), _spec("ddim", 10, 1.0), shape, _gens(3, 1)))


def test_more_steps_than_the_schedule_has_are_refused():
    with pytest.raises(BadInputError, match="at most 100"):
        SamplerSpec(SamplingOptions(steps=200), {"num_train_timesteps": 100})
