"""Stage datasets: shapes, in-breast centres, and equality with the geometry module used at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import BadInputError
from models.geometry import (
    Box,
    MamboGeometry,
    area_downsample,
    local_conditioning,
    local_training_example,
    patch_conditioning,
    patch_training_example,
    snap_mid_origin,
    to_canvas,
)
from training.datasets import (
    DualViewSource,
    InMemoryImages,
    MamboStageSource,
    MammoImage,
    find_pairs,
    make_source,
    sample_in_breast,
    view_at_size,
)
from training.loop import step_generator

GEOM = MamboGeometry(s=16, k=3, overlap=4)
H, W = 96, 72  # canvas 96 = 2 * k * s; mid 32; global factor 6


def breast(h: int = H, w: int = W, seed: int = 0, **meta) -> MammoImage:
    """A half-ellipse against the left edge with smooth texture: the shape preprocessing produces."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy - h / 2) / (0.42 * h)) ** 2 + (xx / (0.8 * w)) ** 2 <= 1.0
    texture = 0.5 + 0.2 * np.sin(yy / (3 + seed)) * np.cos(xx / 4) + 0.05 * rng.standard_normal((h, w))
    image = np.where(mask, np.clip(texture, 0.05, 1.0), 0.0).astype(np.float32)
    return MammoImage(image, mask, meta)


def images(n: int = 3) -> InMemoryImages:
    return InMemoryImages([breast(seed=i) for i in range(n)], {"kind": "test"})


def model_canvas(item: MammoImage) -> torch.Tensor:
    return to_canvas(torch.from_numpy(item.image * 2 - 1), GEOM.plan(H, W).canvas)


def test_stage_samples_have_paper_channels_and_size() -> None:
    g = step_generator(0, 0)
    for stage, channels in (("stage1", 1), ("stage2", 3), ("stage3", 3)):
        batch = make_source(images(), stage, GEOM).batch(g, 5)
        assert batch.shape == (5, channels, 16, 16), stage
        assert batch.dtype == torch.float32 and batch.min() >= -1.0 and batch.max() <= 1.0


def test_stage1_is_the_canvas_block_averaged_to_s() -> None:
    item = images().get(1)
    expected = area_downsample(model_canvas(item), 6)
    assert torch.equal(MamboStageSource(images(), "global", GEOM).example(1)[0], expected)
    # background (right of the breast, padding) stays -1: the chest wall is on the left
    assert expected[:, -1].eq(-1).all() and expected[8, 0] > -1


def test_stage2_example_is_geometry_local_training_example() -> None:
    src = MamboStageSource(images(), "local", GEOM)
    item, plan = images().get(2), GEOM.plan(H, W)
    target, ctx = local_training_example(model_canvas(item), 40, 20, plan)
    assert torch.equal(src.example(2, (40, 20)), torch.cat([target[None], ctx]))
    # ...and its context is what inference builds for that mid tile
    my, mx = snap_mid_origin(40, 20, plan)
    global_image = area_downsample(model_canvas(item), plan.global_factor)
    assert torch.equal(ctx, local_conditioning(global_image, Box(my, mx, 16, 16), plan))


def test_stage3_context_equals_inference_conditioning_at_that_patch() -> None:
    src = MamboStageSource(images(), "patch", GEOM)
    item, plan = images().get(0), GEOM.plan(H, W)
    canvas = model_canvas(item)
    cy, cx = 50, 30
    example = src.example(0, (cy, cx))
    patch, ctx = patch_training_example(canvas, cy, cx, plan)
    assert torch.equal(example, torch.cat([patch[None], ctx]))
    assert torch.equal(example[0], canvas[cy - 8 : cy + 8, cx - 8 : cx + 8])  # native resolution, centred
    # Inference reads the local context from the mid image (the canvas block-averaged by k): same tensor.
    mid = area_downsample(canvas, GEOM.k)
    global_image = area_downsample(canvas, plan.global_factor)
    inference_ctx = patch_conditioning(mid, global_image, Box(cy - 8, cx - 8, 16, 16), plan)
    torch.testing.assert_close(example[1:], inference_ctx, atol=1e-6, rtol=0)


def test_centres_are_inside_the_breast() -> None:
    item = images().get(0)
    g = step_generator(3, 7)
    centres = [sample_in_breast(item.mask, g) for _ in range(300)]
    assert all(item.mask[y, x] for y, x in centres)
    ys, xs = np.array(centres).T
    assert ys.min() < H * 0.3 and ys.max() > H * 0.7 and xs.max() > W * 0.5  # spread over the breast
    with pytest.raises(BadInputError):
        sample_in_breast(np.zeros((4, 4), bool), g)


def test_stage_batches_are_a_pure_function_of_the_generator() -> None:
    src = make_source(images(), "stage3", GEOM)
    a = src.batch(step_generator(0, 11), 4)
    assert torch.equal(a, make_source(images(), "stage3", GEOM).batch(step_generator(0, 11), 4))
    assert not torch.equal(a, src.batch(step_generator(0, 12), 4))


def test_dualview_pairs_cc_and_mlo_of_the_same_breast_as_rgb() -> None:
    items = [
        breast(seed=0, patient_id="p1", study_uid="s1", laterality="L", view="CC"),
        breast(seed=1, patient_id="p1", study_uid="s1", laterality="R", view="MLO"),  # other breast
        breast(seed=2, patient_id="p1", study_uid="s1", laterality="L", view="MLO"),
        breast(seed=3, patient_id="p2", study_uid="s2", laterality="R", view="CC"),  # no MLO
    ]
    imgs = InMemoryImages(items)
    assert find_pairs(imgs) == [(0, 2)]
    src = DualViewSource(imgs, size=24)
    x = src.batch(step_generator(0, 0), 2)
    assert x.shape == (2, 3, 24, 24)
    r, g, b = ((x[0, c] + 1) / 2 for c in range(3))
    torch.testing.assert_close(r, view_at_size(items[0].image, 24))
    torch.testing.assert_close(g, view_at_size(items[2].image, 24))
    torch.testing.assert_close(b, (r - g).abs(), atol=1e-6, rtol=0)
    with pytest.raises(BadInputError, match="pairs"):
        DualViewSource(InMemoryImages(items[3:]), size=24)
