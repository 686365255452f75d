"""The dual-view pipeline: channel encoding, the paper's post-processing, laterality, seeded sampling."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.dualview import (
    DualViewPipeline,
    decode_pair,
    encode_pair,
    orient,
    postprocess,
)
from models.errors import BadInputError, BundleIntegrityError, CancelledError
from models.intensity import DEFAULT_INTENSITY
from models.options import SamplingOptions, request_seeds
from models.requests import chest_wall_side
from models.schedulers import alphas_cumprod
from models.unet import build_unet
from training.phantoms import make_phantom_case

SIZE = 16


@pytest.fixture(scope="module")
def tiny_pipeline() -> DualViewPipeline:
    torch.manual_seed(0)
    return DualViewPipeline(build_unet("tiny", 3, 3, sample_size=SIZE).eval())


def pairs(pipe, count=1, *, seed=0, laterality=None, callback=None, cancel=None, **options):
    """``count`` pairs from ``seed`` on, the test's keywords as the request's SamplingOptions."""
    opts = SamplingOptions(seeds=request_seeds(seed, count), **options)
    return pipe(opts, laterality=laterality, callback=callback, cancel=cancel)


def test_channel_encoding_round_trip_numpy_and_torch():
    rng = np.random.default_rng(0)
    cc, mlo = rng.random((2, 5, 7), dtype=np.float32), rng.random((2, 5, 7), dtype=np.float32)
    rgb = encode_pair(cc, mlo)
    assert rgb.shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(rgb[:, 2], np.abs(cc - mlo))
    back_cc, back_mlo = decode_pair(rgb)
    np.testing.assert_array_equal(back_cc, cc)
    np.testing.assert_array_equal(back_mlo, mlo)

    t_rgb = encode_pair(torch.from_numpy(cc[0]), torch.from_numpy(mlo[0]))
    assert isinstance(t_rgb, torch.Tensor) and t_rgb.shape == (3, 5, 7)
    np.testing.assert_array_equal(t_rgb.numpy(), rgb[0])


def test_encoding_refuses_views_of_different_sizes():
    with pytest.raises(BadInputError):
        encode_pair(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(BadInputError):
        decode_pair(np.zeros((2, 4, 4)))


def test_postprocess_clips_at_the_half_percentiles_and_rescales():
    # 0..200: the 0.5th percentile is 1 and the 99.5th is 199 (linear interpolation), so
    # out = clip((x - 1) / 198, 0, 1).
    x = np.arange(201, dtype=np.float32)
    rgb = np.stack([x, x, x]).reshape(3, 3, 67)
    out = postprocess(rgb)
    flat = out[0].ravel()
    assert flat[0] == 0.0 and flat[1] == 0.0  # 0 clipped up to the low percentile
    assert flat[100] == pytest.approx(99 / 198)
    assert flat[199] == pytest.approx(1.0) and flat[200] == 1.0  # 200 clipped down
    assert out.min() == 0.0 and out.max() == 1.0


def test_postprocess_maps_the_channels_of_a_sample_with_one_affine_map():
    rng = np.random.default_rng(1)
    cc, mlo = rng.random((32, 32)) * 0.6 + 0.2, rng.random((32, 32)) * 0.5
    raw = encode_pair(cc, mlo)
    out = postprocess(np.stack([raw, raw * 0.5]))
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # percentiles are per sample
    lo, hi = np.percentile(raw, [0.5, 99.5])  # over all three channels together
    np.testing.assert_allclose(out[0], np.clip((raw - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_laterality_restore_mirrors_only_the_other_side():
    img = np.zeros((2, 4), np.float32)
    img[:, 0] = 1.0  # chest wall on the left, as generated
    assert chest_wall_side("R") == "right" and chest_wall_side("L") == "left"
    np.testing.assert_array_equal(orient(img, "L", "left"), img)
    np.testing.assert_array_equal(orient(img, "R", "left")[:, -1], [1.0, 1.0])
    np.testing.assert_array_equal(orient(img, None, "left"), img)
    with pytest.raises(BadInputError):
        orient(img, "X", "left")


def test_batch_equals_the_same_samples_generated_one_by_one(tiny_pipeline):
    batch = pairs(tiny_pipeline, 3, seed=10, steps=4, sampler="ddpm", max_batch=2)
    assert batch.seeds == [10, 11, 12]
    for i, s in enumerate(batch.seeds):
        one = pairs(tiny_pipeline, 1, seed=s, steps=4, sampler="ddpm", max_batch=1)
        np.testing.assert_allclose(one.rgb[0], batch.rgb[i], atol=5e-4)  # batched-arithmetic bits
        np.testing.assert_allclose(one.cc[0], batch.cc[i], atol=1e-3)
    assert np.abs(batch.rgb[0] - batch.rgb[1]).max() > 1e-2  # different seeds, different samples


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver"])
def test_every_sampler_gives_pairs_in_range(tiny_pipeline, sampler):
    res = pairs(tiny_pipeline, 2, seed=0, steps=3, sampler=sampler, laterality=["L", "R"])
    assert res.cc.shape == res.mlo.shape == (2, SIZE, SIZE) and res.rgb.shape == (2, 3, SIZE, SIZE)
    assert res.cc.dtype == np.float32
    for arr in (res.cc, res.mlo, res.rgb):
        assert np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0
    assert all(0.0 <= e <= 1.0 for e in res.third_channel_error)
    assert res.laterality == ["L", "R"]
    assert res.stats["model_evaluations"] == 6 and res.stats["sequential_model_calls"] == 3


def test_laterality_r_is_the_mirror_of_l_for_the_same_seed(tiny_pipeline):
    left = pairs(tiny_pipeline, 1, seed=3, steps=2, laterality="L")
    right = pairs(tiny_pipeline, 1, seed=3, steps=2, laterality="R")
    np.testing.assert_allclose(right.cc[0], left.cc[0][:, ::-1], atol=1e-6)
    np.testing.assert_allclose(right.mlo[0], left.mlo[0][:, ::-1], atol=1e-6)


def test_progress_reaches_one_and_cancel_stops_between_steps(tiny_pipeline):
    seen = []
    pairs(tiny_pipeline, 3, seed=0, steps=2, max_batch=2, callback=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4] and seen[-1].fraction == pytest.approx(1.0)
    assert all(p.stage == "dualview" for p in seen)
    calls = []
    with pytest.raises(CancelledError):
        pairs(tiny_pipeline, 1, steps=5, cancel=lambda: calls.append(1) or len(calls) >= 2)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": 0},
        {"steps": 0},
        {"sampler": "euler"},
        {"max_batch": 0},
        {"laterality": ["L"]},
        {"eta": 2.0},
    ],
)
def test_bad_parameters_are_bad_input(tiny_pipeline, kwargs):
    args = {"count": 2, "steps": 1} | kwargs
    with pytest.raises(BadInputError):
        pairs(tiny_pipeline, args.pop("count"), **args)


def test_a_single_channel_network_is_refused():
    with pytest.raises(BundleIntegrityError):
        DualViewPipeline(build_unet("tiny", 1, 1, sample_size=SIZE))


class _OracleDenoiser(torch.nn.Module):
    """The exact noise predictor for a data set of ONE image x*: eps = (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t)."""

    def __init__(self, x_star: torch.Tensor) -> None:
        super().__init__()
        self.x_star = x_star
        self.abar = alphas_cumprod()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the pipeline a device
        self.config = SimpleNamespace(in_channels=3, out_channels=3, sample_size=x_star.shape[-1])
        self.dtype = torch.float32

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        abar = self.abar[int(t)]
        return SimpleNamespace(sample=(x_t - abar.sqrt() * self.x_star) / (1 - abar).sqrt())


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver"])
def test_an_exact_denoiser_gives_back_its_pair_encoded_split_and_mirrored(sampler):
    case = make_phantom_case(7, (32, 32), laterality="L")  # chest wall on the left, as the model draws
    cc, mlo = case.cc.image, case.mlo.image
    x_star = torch.from_numpy(DEFAULT_INTENSITY.to_model(encode_pair(cc, mlo)))
    pipe = DualViewPipeline(_OracleDenoiser(x_star))
    res = pairs(pipe, 2, seed=5, steps=10, sampler=sampler, laterality=["L", "R"])
    np.testing.assert_allclose(res.rgb[0], encode_pair(cc, mlo), atol=2e-3)
    assert res.third_channel_error[0] < 1e-3  # the encoding is kept exactly
    expected_cc, expected_mlo = decode_pair(postprocess(encode_pair(cc, mlo)))
    np.testing.assert_allclose(res.cc[0], expected_cc, atol=5e-3)
    np.testing.assert_allclose(res.mlo[0], expected_mlo, atol=5e-3)
    np.testing.assert_allclose(res.cc[1], expected_cc[:, ::-1], atol=5e-3)  # R: mirrored
    assert res.cc[1][:, -4:].mean() > res.cc[1][:, :4].mean()  # its chest wall is now on the right
