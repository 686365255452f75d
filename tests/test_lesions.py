"""Lesions on demand: class-conditional sampling and mask-guided lesion insertion (tiny random networks).

What is specified here does not depend on trained weights: where pixels may change, where the returned
mask lies (both breasts), what guidance scale 1 means, that classless bundles keep working, and that bad
lesion specs are refused with a message naming the problem.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.bundle import create_random_bundle, load_bundle
from models.errors import BadInputError
from models.imaging.files import read_png, write_png16
from models.lesion_insertion import LesionInserter
from models.lesion_spec import LESION_KINDS, LesionSpec, check_lesions
from models.mambo import MamboPipeline
from models.options import SamplingOptions
from models.requests import GenerationRequest, InsertionRequest
from models.sampling import unet_predictor
from models.unet import build_unet, null_class
from training.phantoms import make_phantom_case

FAST = SamplingOptions(steps=3, seeds=(5,))


@pytest.fixture(scope="module")
def lesion_bundle(tmp_path_factory):
    return create_random_bundle(
        tmp_path_factory.mktemp("b") / "lesion-mambo", preset="tiny", lesion_network=True, conditioning="aligned"
    )


@pytest.fixture(scope="module")
def inserter(lesion_bundle):
    return LesionInserter.from_bundle(lesion_bundle)


def _phantom(laterality: str):
    return make_phantom_case(4242, (256, 192), laterality=laterality).cc  # type: ignore[arg-type]


def _inside_point(view, towards_chest_wall: bool = True) -> tuple[float, float]:
    """A point well inside the breast, nearer the chest wall than the nipple."""
    ys, xs = np.nonzero(view.breast_mask)
    row = float(np.median(ys))
    cols = xs[np.abs(ys - row) < 3]
    wall = cols.min() if view.chest_wall == "left" else cols.max()
    return row, float(wall + (30 if view.chest_wall == "left" else -30))


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_outside_the_edit_region_the_output_is_the_input_bit_for_bit(inserter, laterality):
    view = _phantom(laterality)
    centre = _inside_point(view)
    lesions = [LesionSpec("mass", centre, 14), LesionSpec("calcifications", (centre[0] - 40, centre[1]), 9)]
    result = inserter(view.image, lesions, FAST)
    assert np.array_equal(result.image[~result.edited], view.image[~result.edited])
    assert result.edited.any() and not np.array_equal(result.image, view.image)
    # every change lies inside the union of the edit regions
    changed = result.image != view.image
    assert not (changed & ~result.edited).any()


def test_a_16_bit_png_round_trip_keeps_the_unedited_pixels(inserter, tmp_path):
    view = _phantom("L")
    src = write_png16(tmp_path / "in.png", view.image)
    image = read_png(src)
    result = inserter(image, [LesionSpec("mass", _inside_point(view), 12)], FAST)
    out = read_png(write_png16(tmp_path / "out.png", result.image))
    raw_in = np.asarray(read_png(src) * 65535).round()
    raw_out = np.asarray(out * 65535).round()
    assert np.array_equal(raw_out[~result.edited], raw_in[~result.edited])


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_the_returned_mask_is_exactly_where_the_lesion_was_asked(inserter, laterality):
    view = _phantom(laterality)
    row, col = _inside_point(view)
    result = inserter(view.image, [LesionSpec("mass", (row, col), 16)], FAST)
    mask = result.masks[0]
    ys, xs = np.nonzero(mask)
    assert abs(ys.mean() - row) < 0.5 and abs(xs.mean() - col) < 0.5  # not mirrored to the other side
    assert abs(2 * np.sqrt(mask.sum() / np.pi) - 16) < 1.0
    rec = result.records[0]
    assert rec["center"] == [row, col] and rec["mask_pixels"] == int(mask.sum())
    # the edit region surrounds the mask and lies on the asked side (chest wall side kept)
    assert (result.edited | ~mask).all()
    eys, exs = np.nonzero(result.edited)
    assert abs(exs.mean() - col) < 1.0 and abs(eys.mean() - row) < 1.0
    assert result.stats["orientation"]["chest_wall"] == view.chest_wall


def test_an_explicit_mask_is_returned_unchanged(inserter):
    view = _phantom("R")
    row, col = _inside_point(view)
    mask = np.zeros(view.image.shape, bool)
    mask[int(row) - 4 : int(row) + 5, int(col) - 7 : int(col) + 8] = True  # an oblong lesion
    result = inserter(view.image, [LesionSpec("mass", mask=mask)], FAST)
    assert np.array_equal(result.masks[0], mask)
    assert result.edited[mask].all()


def test_large_lesions_are_inserted_at_the_mid_resolution(inserter, lesion_bundle):
    view = make_phantom_case(77, (384, 288), laterality="L").cc
    ys, xs = np.nonzero(view.breast_mask)
    centre = (float(np.median(ys)), float(np.median(xs)))
    small = inserter(view.image, [LesionSpec("mass", centre, 10)], FAST).records[0]
    large = inserter(view.image, [LesionSpec("mass", centre, 30)], FAST)
    s = load_bundle(lesion_bundle).geometry["s"]
    assert small["scale"] == "patch" and large.records[0]["scale"] == "local"
    assert large.records[0]["window_bbox"][2] == 3 * s
    assert np.array_equal(large.image[~large.edited], view.image[~large.edited])


def test_insertion_is_deterministic_in_the_seed(inserter):
    view = _phantom("L")
    lesions = [LesionSpec("spiculated_mass", _inside_point(view), 12)]
    a = inserter(view.image, lesions, FAST).image
    b = inserter(view.image, lesions, FAST).image
    c = inserter(view.image, lesions, SamplingOptions(steps=3, seeds=(6,))).image
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("lesion", "message"),
    [
        (dict(kind="mass", center=(5.0, 5.0), diameter_px=6.0), "outside the breast"),
        (dict(kind="mass", center=(400.0, 50.0), diameter_px=6.0), "off the 256x192 image"),
        (dict(kind="mass", center=(2.0, 100.0), diameter_px=10.0), "reaches off"),
        (dict(kind="tumour", center=(128.0, 60.0), diameter_px=10.0), "unknown kind 'tumour'"),
        (dict(kind="mass", center=(128.0, 60.0), diameter_px=70.0), "edits at most"),
    ],
)
def test_bad_lesion_specs_are_refused_naming_the_problem(inserter, lesion, message):
    view = _phantom("L")
    with pytest.raises(BadInputError, match=message):
        inserter(view.image, [LesionSpec(**lesion)], FAST)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "mass", "center": [10, 10], "diameter_px": -3}, "positive"),
        ({"kind": "mass", "center": [10], "diameter_px": 5}, "two numbers"),
        ({"kind": "mass", "center": [10, 10]}, "needs diameter_px"),
        ({"kind": "mass", "center": [10, 10], "diameter_px": 5, "depth": 2}, "unknown lesion field"),
        ({"kind": "", "center": [10, 10], "diameter_px": 5}, "kind must be a name"),
    ],
)
def test_lesion_specs_are_validated_before_anything_runs(spec, message):
    with pytest.raises(BadInputError, match=message):
        InsertionRequest(lesions=(spec,))


def test_the_cli_form_of_a_lesion_parses_and_refuses_garbage():
    les = LesionSpec.parse("calcifications:120.5,80,9")
    assert (les.kind, les.center, les.diameter_px) == ("calcifications", (120.5, 80.0), 9.0)
    with pytest.raises(BadInputError, match="KIND:ROW,COL,DIAMETER_PX"):
        LesionSpec.parse("mass:1,2")
    with pytest.raises(BadInputError, match="must be numbers"):
        LesionSpec.parse("mass:a,b,c")


def test_requests_carry_lesions_and_class_through_json():
    req = GenerationRequest(label="mass", lesions=({"kind": "mass", "center": [50, 60], "diameter_px": 12},))
    back = GenerationRequest.from_dict(req.to_dict())
    assert back == req and back.lesions[0].center == (50.0, 60.0)
    ins = InsertionRequest(lesions=(LesionSpec("mass", (1, 2), 5),), options=SamplingOptions(guidance_scale=2.5))
    assert InsertionRequest.from_dict(ins.to_dict()) == ins
    with pytest.raises(BadInputError, match="dual-view"):
        GenerationRequest(model="dualview", label="mass")
    with pytest.raises(BadInputError, match="guidance_scale"):
        SamplingOptions(guidance_scale=-1)


def test_check_lesions_needs_at_least_one():
    with pytest.raises(BadInputError, match="at least one"):
        check_lesions([], (10, 10), LESION_KINDS)


# -- class-conditional networks and classifier-free guidance -------------------------------------


def test_guidance_scale_one_is_exactly_the_plain_conditional_model():
    torch.manual_seed(0)
    unet = build_unet("tiny", 1, classes=3).eval()
    assert null_class(unet) == 3
    x, t = torch.randn(2, 1, 32, 32), torch.tensor(500)
    with torch.no_grad():
        plain = unet(x, t, class_labels=torch.tensor([1, 1])).sample
        guided1 = unet_predictor(unet, None, 8, label=1, guidance_scale=1.0)(x, t)
        guided3 = unet_predictor(unet, None, 8, label=1, guidance_scale=3.0)(x, t)
        uncond = unet(x, t, class_labels=torch.tensor([3, 3])).sample
    assert torch.equal(guided1, plain)
    assert torch.allclose(guided3, uncond + 3.0 * (plain - uncond), atol=1e-5)
    with torch.no_grad():  # no label: the "no class" embedding
        assert torch.equal(unet_predictor(unet, None, 8)(x, t), uncond)


def test_class_conditional_generation_guides_every_stitching_mode_alike(tmp_path):
    bundle = create_random_bundle(tmp_path / "cc", preset="tiny", classes=("normal", "mass"), conditioning="aligned")
    assert load_bundle(bundle).classes("global") == ("normal", "mass")
    pipe = MamboPipeline.from_bundle(bundle)
    opts = {"steps": 2, "seeds": (3,), "guidance_scale": 2.0, "skip_background": False}
    raster = pipe(96, 96, SamplingOptions(stitching="raster", **opts), label="mass").image
    wave = pipe(96, 96, SamplingOptions(stitching="wavefront", **opts), label="mass").image
    normal = pipe(96, 96, SamplingOptions(stitching="wavefront", **opts), label="normal").image
    assert np.abs(raster - wave).max() < 1e-4
    assert np.abs(normal - wave).max() > 1e-3  # the class changes the image
    with pytest.raises(BadInputError, match="unknown class 'calcification'"):
        pipe(96, 96, SamplingOptions(**opts), label="calcification")


def test_a_classless_bundle_still_loads_and_generates_and_refuses_a_class(mambo_bundle):
    pipe = MamboPipeline.from_bundle(mambo_bundle)
    assert pipe.classes == () and pipe.lesion_unet is None
    image = pipe(None, None, SamplingOptions(steps=2, seeds=(1,))).image
    assert np.isfinite(image).all()
    with pytest.raises(BadInputError, match="not class-conditional"):
        pipe(None, None, SamplingOptions(steps=2, seeds=(1,)), label="mass")
    with pytest.raises(Exception, match="no lesion network"):
        LesionInserter(pipe)


def test_a_bundle_must_name_the_classes_of_a_class_conditional_network(tmp_path):
    from models.bundle import save_bundle
    from models.intensity import DEFAULT_INTENSITY
    from models.schedulers import NOISE_SCHEDULE

    nets = {"dualview": build_unet("tiny", 3, 3, classes=2)}
    common = dict(
        kind="dualview",
        name="x",
        version="0",
        networks=nets,
        geometry={"size": 32},
        intensity=DEFAULT_INTENSITY,
        schedule=NOISE_SCHEDULE,
        training={},
        random_weights=True,
    )
    with pytest.raises(ValueError, match="name its classes"):
        save_bundle(tmp_path / "a", **common)
    with pytest.raises(ValueError, match="3 class names for 3 class embeddings"):
        save_bundle(tmp_path / "b", **common, classes={"dualview": ["a", "b", "c"]})
    path = save_bundle(tmp_path / "c", **common, classes={"dualview": ["a", "b"]})
    assert load_bundle(path).manifest["networks"]["dualview"]["classes"] == ["a", "b"]


# -- the shipped demo lesion network ------------------------------------------------------------

DEMO = "models/demo_bundles/demo-mambo"


def test_the_demo_bundle_ships_a_lesion_network_within_the_size_budget():
    from pathlib import Path

    b = load_bundle(DEMO)
    assert b.classes("lesion") == LESION_KINDS and b.network_info("lesion")["conditioning"] == "residual"
    total = sum(p.stat().st_size for p in Path("models/demo_bundles").rglob("*") if p.is_file())
    assert total <= 30_000_000


@pytest.mark.slow
def test_the_demo_lesion_network_draws_a_brighter_lesion_inside_the_mask_and_nothing_outside():
    from training.lesions import EVAL_FIRST_SEED

    view = make_phantom_case(EVAL_FIRST_SEED + 1, (768, 576), lesions=True, laterality="R").cc
    mass = next(les for les in view.lesions if les.kind != "calcifications")
    inserter = LesionInserter.from_bundle(DEMO)
    lesion = LesionSpec(mass.kind, mass.center, mass.diameter_px)
    result = inserter(view.healthy, [lesion], SamplingOptions(steps=10, seeds=(0,)))
    change = result.image - view.healthy
    mask = result.masks[0]
    assert change[mask].mean() > 0.02  # a mass is denser than the tissue it lies on
    assert np.array_equal(result.image[~result.edited], view.healthy[~result.edited])
