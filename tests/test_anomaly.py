"""Anomaly maps: preprocessing, the oracle (perfect healthy reconstruction), orientation, the diffusion part."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly import AnomalyPipeline, anomaly_from_reconstructions
from models.anomaly_input import prepare
from models.anomaly_postprocess import PAPER_POST
from models.errors import BadInputError, CancelledError
from models.geometry import MamboGeometry
from models.metrics.segmentation import iou
from models.requests import AnomalyConfig
from tests.pipeline_support import flat_request, tiny_mambo
from training.phantoms import make_phantom_case

#: s = 256, k = 1: the global grid IS the 256^2 input grid, so the oracle test measures the recipe alone.
IDENTITY = MamboGeometry(s=256, k=1, overlap=32)
TINY = MamboGeometry(s=32, k=2, overlap=8)


@pytest.fixture(scope="module")
def tiny_pipeline() -> AnomalyPipeline:
    return AnomalyPipeline(tiny_mambo(TINY))


def _fast(**kw) -> AnomalyConfig:
    """DDPM over the 1000-step schedule from a small lambda: lambda + 1 model calls, fast on CPU."""
    return _config(**{"lam": 3, "seeds": (0, 1), **kw})


def _config(**kw) -> AnomalyConfig:
    return flat_request(AnomalyConfig, **{"sampler": "ddpm", "steps": 1000, **kw})


# --- the oracle: a perfect healthy reconstruction ---------------------------------------------------


@pytest.mark.parametrize(("seed", "laterality"), [(29, "L"), (13, "R")])
@pytest.mark.parametrize("view", ["cc", "mlo"])
def test_perfect_healthy_reconstruction_recovers_the_inserted_mass(seed, laterality, view):
    case = make_phantom_case(seed, (256, 256), lesions=True)
    assert case.laterality == laterality
    v = getattr(case, view)
    prep = prepare(v.image, IDENTITY, companions=[v.healthy])
    result = anomaly_from_reconstructions(prep, list(prep.companions_global), AnomalyConfig(threshold_mode="otsu"))
    assert iou(result.mask, v.mass_mask) > 0.8
    assert result.threshold_mode == "otsu"


def test_paper_recipe_also_recovers_the_mass_from_a_perfect_reconstruction():
    v = make_phantom_case(29, (256, 256), lesions=True).cc
    prep = prepare(v.image, IDENTITY, companions=[v.healthy])
    result = anomaly_from_reconstructions(prep, list(prep.companions_global), AnomalyConfig(post=PAPER_POST))
    assert iou(result.mask, v.mass_mask) > 0.8


def test_perfect_reconstruction_on_a_coarser_global_grid_still_finds_the_mass():
    v = make_phantom_case(29, (256, 256), lesions=True).cc
    prep = prepare(v.image, MamboGeometry(s=64, k=4, overlap=8), companions=[v.healthy])  # 4x coarser
    assert prep.global_image.shape == (64, 64) and prep.global_factor == 4
    result = anomaly_from_reconstructions(prep, list(prep.companions_global))
    assert result.mask.shape == (256, 256)
    assert iou(result.mask, v.mass_mask) > 0.6


def test_reconstructing_the_input_itself_finds_nothing():
    v = make_phantom_case(29, (256, 256), lesions=True).cc
    prep = prepare(v.image, IDENTITY)
    result = anomaly_from_reconstructions(prep, [prep.global_image])
    assert result.heatmap.max() == 0.0 and not result.mask.any()


# --- preprocessing and orientation ------------------------------------------------------------------


def test_prepare_puts_the_chest_wall_left_zeroes_background_and_maps_intensity():
    case = make_phantom_case(13, (128, 96), lesions=False)
    assert case.laterality == "R"
    prep = prepare(case.cc.image, TINY)
    assert prep.orientation.flipped
    assert prep.breast[:, :4].any() and not prep.breast[:, -4:].any()  # chest wall now on the left
    assert prep.canonical[~prep.breast].max() == 0.0
    assert prep.canonical[prep.breast].min() == pytest.approx(0.0) and prep.canonical.max() == pytest.approx(1.0)
    assert prep.canvas == TINY.canvas_side(128, 96) and prep.global_image.shape == (32, 32)


def test_oracle_map_of_a_mirrored_input_is_the_mirrored_map():
    v = make_phantom_case(29, (256, 256), lesions=True).cc
    left = prepare(v.image, IDENTITY, companions=[v.healthy])
    right = prepare(v.image[:, ::-1], IDENTITY, companions=[v.healthy[:, ::-1]])
    assert not left.orientation.flipped and right.orientation.flipped
    a = anomaly_from_reconstructions(left, list(left.companions_global))
    b = anomaly_from_reconstructions(right, list(right.companions_global))
    np.testing.assert_array_equal(b.mask, a.mask[:, ::-1])
    np.testing.assert_allclose(b.heatmap, a.heatmap[:, ::-1], atol=1e-6)


def test_pipeline_output_of_a_right_breast_is_the_mirror_of_its_left_twin(tiny_pipeline):
    image = make_phantom_case(29, (64, 48), lesions=True).cc.image  # a left breast, not square
    left = tiny_pipeline(image, _fast())
    right = tiny_pipeline(np.ascontiguousarray(image[:, ::-1]), _fast())
    for name in ("heatmap", "mask", "region", "reconstruction", "preprocessed"):
        a, b = getattr(left, name), getattr(right, name)
        assert a.shape == image.shape, name
        np.testing.assert_allclose(b, a[:, ::-1], atol=1e-5, err_msg=name)
    assert right.stats["orientation"]["chest_wall"] == "right"


# --- the diffusion part -------------------------------------------------------------------------------


def test_lambda_sets_where_denoising_starts_and_how_many_calls_it_costs(tiny_pipeline):
    image = make_phantom_case(3, (64, 64), lesions=True).mlo.image
    result = tiny_pipeline(image, _fast(lam=3, seeds=(0, 1, 2)))
    assert result.stats["start_timestep"] == 3
    # timesteps 3, 2, 1, 0; the three seeds denoise as one batch
    assert result.stats["model_evaluations"] == 4 * 3
    assert result.stats["sequential_calls"] == 4
    assert result.heatmap.shape == image.shape and result.mask.dtype == bool
    assert not (result.mask & ~result.region).any()  # nothing outside the eroded breast


def test_the_same_seeds_give_the_same_map(tiny_pipeline):
    image = make_phantom_case(4, (64, 64), lesions=True).cc.image
    a, b = tiny_pipeline(image, _fast(lam=2)), tiny_pipeline(image, _fast(lam=2))
    np.testing.assert_array_equal(a.heatmap, b.heatmap)


def test_full_resolution_map_runs_every_breast_patch_through_the_patch_model(tiny_pipeline):
    image = make_phantom_case(5, (64, 48), lesions=True).cc.image
    result = tiny_pipeline(image, _fast(resolution="full", lam=2, seeds=(0,)))
    plan = TINY.plan(64, 48)
    assert result.heatmap.shape == (64, 48)
    assert result.stats["model_evaluations"] <= plan.patch_grid.n * 3
    assert result.stats["model_evaluations"] > 0 and result.stats["model_evaluations"] % 3 == 0


def test_cancel_stops_the_job(tiny_pipeline):
    image = make_phantom_case(4, (64, 64)).cc.image
    with pytest.raises(CancelledError):
        tiny_pipeline(image, _fast(), cancel=lambda: True)


def test_progress_reaches_the_end(tiny_pipeline):
    seen = []
    tiny_pipeline(make_phantom_case(4, (64, 64)).cc.image, _fast(lam=2, seeds=(0,)), callback=seen.append)
    assert seen and seen[-1].stage == "anomaly" and seen[-1].fraction == pytest.approx(1.0)


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0), np.float32), "empty"),
        (np.zeros((64, 64, 3), np.float32), "2-D"),
        (np.full((64, 64), 0.5, np.float32), "no breast"),
        (np.full((64, 64), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_fail_with_a_clear_bad_input_error(tiny_pipeline, image, message):
    with pytest.raises(BadInputError, match=message):
        tiny_pipeline(image, _fast())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lam": 0}, "lambda"),
        ({"lam": 1000}, "lambda"),
        ({"seeds": ()}, "seed"),
        ({"threshold_mode": "percentile"}, "needs a threshold"),
        ({"threshold_mode": "median"}, "threshold mode"),
        ({"sampler": "euler"}, "sampler"),
        ({"resolution": "half"}, "resolution"),
    ],
)
def test_bad_configurations_fail_with_a_clear_bad_input_error(kw, message):
    with pytest.raises(BadInputError, match=message):
        _config(**kw)


def test_full_resolution_needs_an_image_of_at_least_one_tile(tiny_pipeline):
    image = make_phantom_case(4, (40, 40)).cc.image
    with pytest.raises(BadInputError, match="at least 32x32"):
        tiny_pipeline(np.ascontiguousarray(image[:, :30]), _fast(resolution="full"))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmsolver"])
def test_a_global_network_that_knows_the_healthy_twin_gives_the_perfect_reconstruction_map(prediction_type, sampler):
    """The anomaly path reads the network as the schedule says: an oracle (in epsilon or v space) whose
    x0 is the healthy twin reconstructs it exactly, so the map equals the perfect-reconstruction map."""
    import torch

    from models.intensity import IntensityMapping
    from models.mambo import MamboPipeline
    from tests.test_mambo_oracle import ContextOracle, output_for

    geometry = MamboGeometry(s=64, k=4, overlap=8)
    v = make_phantom_case(29, (256, 256), lesions=True).cc
    prep = prepare(v.image, geometry, companions=[v.healthy])
    healthy = IntensityMapping.to_model(torch.from_numpy(prep.companions_global[0]))[None, None]

    class HealthyOracle(ContextOracle):
        def forward(self, x, t):
            from diffusers.models.unets.unet_2d import UNet2DOutput

            return UNet2DOutput(sample=output_for(x, healthy.expand_as(x), t, self.prediction_type))

    schedule = {"prediction_type": prediction_type, "clip_sample": True}
    local = ContextOracle(3, geometry, prediction_type)
    pipe = AnomalyPipeline(
        MamboPipeline(HealthyOracle(1, geometry, prediction_type), local, local, schedule=schedule, geometry=geometry)
    )
    config = _config(lam=300, seeds=(0, 1), sampler=sampler, steps=20)
    result = pipe(v.image, config)
    expected = anomaly_from_reconstructions(prep, [prep.companions_global[0]] * 2, config)
    np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=1e-4)
    assert iou(result.mask, v.mass_mask) > 0.5
