"""Super-resolution: target sizes, what the input stands in for, orientation round trips, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.errors import BadInputError
from models.geometry import MamboGeometry
from models.imaging.mask import breast_mask
from models.imaging.orientation import side_from_content
from models.intensity import IntensityMapping
from models.mambo import MamboPipeline
from models.metrics.image_quality import downsample_area
from models.requests import SuperResConfig
from models.superres import SuperResolutionPipeline, intensity_window, resize_image
from tests.pipeline_support import flat_request, tiny_mambo
from training.phantoms import make_phantom_case

TINY = MamboGeometry(s=32, k=2, overlap=8)


@pytest.fixture(scope="module")
def sr() -> SuperResolutionPipeline:
    return SuperResolutionPipeline(tiny_mambo(TINY))


def _fast(**kw) -> SuperResConfig:
    """Scale 2, one step, seed 3 unless the test says otherwise."""
    return flat_request(SuperResConfig, **{"scale": 2, "steps": 1, "seeds": (3,), **kw})


@pytest.fixture(scope="module")
def low_left() -> np.ndarray:
    """A left breast (chest wall left) at 1/2 of 64 x 48."""
    case = make_phantom_case(29, (64, 48))
    assert case.laterality == "L"
    return downsample_area(case.cc.image, 2)


@pytest.fixture(scope="module")
def left_result(sr, low_left):
    return sr(low_left, _fast())


@pytest.fixture(scope="module")
def right_result(sr, low_left):
    return sr(np.ascontiguousarray(low_left[:, ::-1]), _fast())


def test_scale_gives_the_target_size(left_result):
    result = left_result
    assert result.image.shape == (64, 48)
    assert result.image.dtype == np.float32 and result.image.min() >= 0.0 and result.image.max() <= 1.0


def test_explicit_target_size_overrides_the_scale(sr, low_left):
    result = sr(low_left, _fast(height=70, width=50))
    assert result.image.shape == (70, 50)


def test_a_right_breast_comes_back_as_the_mirror_of_its_left_twin(left_result, right_result):
    a, b = left_result, right_result
    assert not a.orientation.flipped and b.orientation.flipped
    np.testing.assert_allclose(b.image, a.image[:, ::-1], atol=1e-5)
    assert b.stats["orientation"]["chest_wall"] == "right"


def test_the_output_keeps_the_breast_on_the_input_side(low_left, left_result, right_result):
    for low, result in ((low_left, left_result), (np.ascontiguousarray(low_left[:, ::-1]), right_result)):
        upsampled_mask = breast_mask(resize_image(low, result.image.shape))
        assert side_from_content(result.image, upsampled_mask) == side_from_content(low)


@pytest.mark.parametrize("mapping", [IntensityMapping(), IntensityMapping("percentile", 2.0, 98.0)])
def test_intensity_window_inverts_the_intensity_mapping(mapping):
    rng = np.random.default_rng(0)
    raw = (rng.random((20, 20)) * 0.6 + 0.2).astype(np.float32)
    breast = np.ones_like(raw, bool)
    breast[:4] = False
    lo, hi = intensity_window(raw, mapping.normalize_raw(raw, breast), breast)
    if mapping.raw_window == "minmax":
        assert (lo, hi) == pytest.approx((raw[breast].min(), raw[breast].max()), abs=1e-5)
    else:
        assert (lo, hi) == pytest.approx(tuple(np.percentile(raw[breast], [2.0, 98.0])), abs=1e-5)


def test_output_is_in_the_input_intensity_window_with_background_zero(low_left, left_result):
    breast = breast_mask(low_left)
    lo, hi = left_result.stats["intensity_window"]
    assert (lo, hi) == pytest.approx((low_left[breast].min(), low_left[breast].max()), abs=1e-4)
    assert left_result.image.max() <= hi + 1e-4
    far_background = ~breast_mask(resize_image(low_left, (64, 48))) & (np.arange(48) > 44)[None, :]
    assert far_background.any() and left_result.image[far_background].max() < 0.05
    assert left_result.normalized.min() >= 0.0 and left_result.normalized.max() <= 1.0


def test_small_scales_use_the_input_as_the_mid_image_and_run_stage_3_only(sr, low_left, left_result):
    result = left_result  # scale 2 <= 1.5 k (k = 2)
    assert result.stand_in == "mid"
    assert set(result.stats["stages"]) == {"patch"}
    expected = resize_image(sr.mambo.preprocess.intensity.normalize_raw(low_left, breast_mask(low_left)), (32, 24))
    np.testing.assert_allclose(result.mid_image, np.where(breast_mask(low_left).any(), expected, 0), atol=0.05)


def test_large_scales_use_the_input_as_the_global_image_and_run_stages_2_and_3(sr):
    low = downsample_area(make_phantom_case(29, (64, 64)).cc.image, 4)  # 16 x 16
    result = sr(low, _fast(scale=4))
    assert result.stand_in == "global"
    assert set(result.stats["stages"]) == {"local", "patch"}
    # the 64 px target sits on a 64 px canvas (k s = 64): the input fills the 32 px global image
    assert result.plan.canvas == 64
    assert result.global_image.shape == (32, 32)
    assert result.global_image[:, :4].max() > 0.2  # chest wall side carries tissue


@pytest.mark.slow
def test_stand_in_can_be_forced(sr, low_left):
    result = sr(low_left, _fast(stand_in="global"))
    assert result.stand_in == "global" and "local" in result.stats["stages"]


@pytest.mark.slow
@pytest.mark.parametrize(("stitching", "sampler"), [("raster", "ddpm"), ("fused", "dpmsolver"), ("wavefront", "ddim")])
def test_every_stitching_mode_and_sampler_runs(sr, low_left, stitching, sampler):
    result = sr(low_left, _fast(stitching=stitching, sampler=sampler, steps=2))
    assert result.image.shape == (64, 48) and np.isfinite(result.image).all()
    assert result.stats["stitching"] == stitching and result.stats["sampler"] == sampler


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"scale": 1}, "scale"),
        ({"scale": None}, "scale"),
        ({"height": 64}, "both"),
        ({"height": 10, "width": 10}, "smaller than"),
        ({"stitching": "zigzag"}, "stitching"),
        ({"sampler": "euler"}, "sampler"),
        ({"stand_in": "local"}, "stand_in"),
        ({"seeds": (1, 2)}, "one seed"),
    ],
)
def test_bad_options_fail_with_a_clear_bad_input_error(sr, low_left, kw, message):
    with pytest.raises(BadInputError, match=message):
        sr(low_left, _fast(**kw))


def test_a_target_below_one_tile_is_refused(sr):
    low = downsample_area(make_phantom_case(1, (40, 40)).cc.image, 4)  # 10 x 10 -> 20 x 20 < 32
    with pytest.raises(BadInputError, match="smaller than one 32-pixel tile"):
        sr(low, _fast(scale=2))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 5), np.float32), "empty"),
        (np.zeros((16, 16, 3), np.float32), "2-D"),
        (np.zeros((32, 24), np.float32), "no breast"),
    ],
)
def test_bad_images_fail_with_a_clear_bad_input_error(sr, image, message):
    with pytest.raises(BadInputError, match=message):
        sr(image, _fast())


@pytest.mark.parametrize(("laterality", "prediction_type"), [("L", "epsilon"), ("R", "epsilon"), ("L", "v_prediction")])
def test_with_a_stage_3_that_returns_its_context_the_output_is_the_input_upsampled(laterality, prediction_type):
    """Content, not shape: an oracle stage 3 gives back the centre of its context channel, so the
    super-resolved image must be the preprocessed input upsampled k x k, in the input's orientation
    and, through the intensity window, at the input's own intensities inside the breast."""
    from models.preprocess import preprocess_image
    from tests.test_mambo_oracle import GEO, ContextOracle

    oracle = ContextOracle(3, GEO, prediction_type)
    schedule = {"prediction_type": prediction_type, "clip_sample": prediction_type != "epsilon"}
    mambo = MamboPipeline(ContextOracle(1, GEO), oracle, oracle, schedule=schedule, geometry=GEO)
    sr = SuperResolutionPipeline(mambo)
    low = downsample_area(make_phantom_case(5, (96, 72), laterality=laterality).cc.image, 3)  # 32 x 24
    result = sr(low, _fast(scale=GEO.k, stand_in="mid", steps=4, skip_background=False))
    assert result.stand_in == "mid" and result.image.shape == (96, 72)
    pre = preprocess_image(low)
    expected = pre.to_source(np.repeat(np.repeat(pre.image, 3, 0), 3, 1), (96, 72))
    np.testing.assert_allclose(result.normalized, expected, atol=2e-3)
    inside = np.repeat(np.repeat(breast_mask(low), 3, 0), 3, 1) & np.repeat(np.repeat(low > 0.2, 3, 0), 3, 1)
    upsampled_low = np.repeat(np.repeat(low, 3, 0), 3, 1)
    assert np.abs(result.image - upsampled_low)[inside].mean() < 0.02  # the input's own intensities


def test_outside_the_breast_the_output_keeps_the_inputs_own_background():
    """A grey (not black) background is the input's: super-resolution must not force it to 0."""
    low = downsample_area(make_phantom_case(5, (96, 72), laterality="L").cc.image, 3)
    grey = np.where(breast_mask(low), low, 0.03).astype(np.float32)  # below the mask's Otsu fraction
    from tests.test_mambo_oracle import GEO, ContextOracle

    oracle = ContextOracle(3, GEO)
    sr = SuperResolutionPipeline(MamboPipeline(ContextOracle(1, GEO), oracle, oracle, geometry=GEO))
    result = sr(grey, _fast(scale=GEO.k, stand_in="mid", steps=4, skip_background=False))
    far = ~np.repeat(np.repeat(ndimage.binary_dilation(breast_mask(grey), iterations=3), 3, 0), 3, 1)
    assert far.any()
    np.testing.assert_allclose(result.image[far], 0.03, atol=2e-3)
