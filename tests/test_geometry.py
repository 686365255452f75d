"""One geometry for training and inference: grids, ownership, waves, and conditioning that agrees exactly."""

import numpy as np
import pytest
import torch

from models.geometry import (
    Box,
    MamboGeometry,
    TileGrid,
    area_downsample,
    crop,
    grid_positions,
    local_conditioning,
    local_training_example,
    patch_conditioning,
    patch_context_box,
    patch_training_example,
    shift_image,
    to_canvas,
    upsampled_crop,
)

PAPER = MamboGeometry(s=256, k=3, overlap=32)


def test_paper_geometry_3840_square_counts():
    plan = PAPER.plan(3840, 3840)
    c = plan.counts()
    assert (c["canvas"], c["mid"], plan.global_factor) == (3840, 1280, 15)
    assert c["tiles"] == {"global": 1, "local": 36, "patch": 289}
    seq = c["sequential_calls_per_step"]
    assert seq["raster"]["total"] == 1 + 36 + 289
    assert (seq["wavefront"]["local"], seq["wavefront"]["patch"], seq["wavefront"]["total"]) == (11, 33, 45)
    assert seq["fused"]["total"] == 3


def test_paper_geometry_non_square_3328x2560():
    plan = PAPER.plan(3328, 2560)
    assert plan.canvas == 3840
    assert (plan.local_grid.rows, plan.local_grid.cols) == (5, 4)  # mid 1110 x 854
    assert (plan.patch_grid.rows, plan.patch_grid.cols) == (15, 12)
    assert (plan.patch_grid.height, plan.patch_grid.width) == (3328, 2560)
    assert PAPER.plan(3072, 3072).canvas == 3072 and PAPER.plan(3072, 3072).mid_side == 1024


def test_grid_covers_exactly_with_the_last_tile_clamped():
    assert grid_positions(3840, 256, 32) == (*range(0, 3584, 224), 3584)
    assert grid_positions(256, 256, 32) == (0,)
    assert grid_positions(100, 32, 8) == (0, 24, 48, 68)
    with pytest.raises(ValueError):
        grid_positions(20, 32, 8)


@pytest.mark.parametrize(("h", "w"), [(100, 76), (32, 32), (57, 100)])
def test_known_masks_and_owned_boxes_match_first_writer_wins_painting(h, w):
    grid = TileGrid.cover(h, w, 32, 8)
    owner = grid.owner_map()
    assert (owner >= 0).all()
    for i, j in grid.raster():
        b = grid.box(i, j)
        np.testing.assert_array_equal(grid.known_mask(i, j), owner[b.slices] != grid.index(i, j))
        ob = grid.owned_box(i, j)
        assert (owner[ob.slices] == grid.index(i, j)).all()
        assert (owner == grid.index(i, j)).sum() == ob.h * ob.w


@pytest.mark.parametrize(("h", "w"), [(100, 76), (3840, 3840), (3328, 2560)])
def test_every_inherited_pixel_is_owned_by_a_tile_on_an_earlier_wave(h, w):
    """The property that makes wavefront == raster, including the clamped last row and column."""
    grid = TileGrid.cover(h, w, 32, 8) if h < 1000 else PAPER.plan(h, w).patch_grid
    owner = grid.owner_map()
    wave_of = {grid.index(i, j): i + j for i, j in grid.raster()}
    for d, wave in enumerate(grid.waves()):
        for i, j in wave:
            inherited = owner[grid.box(i, j).slices][grid.known_mask(i, j)]
            assert all(wave_of[int(o)] < d for o in np.unique(inherited))
    assert sum(len(w) for w in grid.waves()) == grid.n


def test_shift_image_moves_content_and_fills_background():
    x = torch.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(shift_image(x, 1, 0)[:3], x[1:])
    assert (shift_image(x, 1, 0)[3] == -1).all()
    np.testing.assert_allclose(shift_image(x, 0, 0.5)[:, :3], (x[:, :3] + x[:, 1:]) / 2)


def _phantom(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A breast-like test image in model range: half-ellipse on the left with smooth texture and fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2 < 1
    tex = np.sin(xx / 7.0) * np.cos(yy / 11.0) * 0.2 + rng.normal(0, 0.05, (h, w))
    img = np.where(body, 0.2 + 0.5 * (1 - xx / w) + tex, 0.0)
    return torch.from_numpy(np.clip(img, 0, 1).astype(np.float32) * 2 - 1)


@pytest.mark.parametrize("conditioning", ["paper", "aligned"])
@pytest.mark.parametrize(("h", "w"), [(160, 96), (100, 130)])
def test_patch_conditioning_at_inference_equals_training_for_the_patch_centred_there(h, w, conditioning):
    geo = MamboGeometry(s=32, k=3, overlap=8, conditioning=conditioning)
    plan = geo.plan(h, w)
    full = to_canvas(_phantom(h, w), plan.canvas)
    mid = area_downsample(full, geo.k)
    glob = area_downsample(full, plan.global_factor)
    for i, j in plan.patch_grid.raster():
        box = plan.patch_grid.box(i, j)
        infer = patch_conditioning(mid, glob, box, plan)
        patch, train = patch_training_example(full, box.y + geo.s // 2, box.x + geo.s // 2, plan)
        assert (infer - train).abs().max() < 1e-6
        assert torch.equal(patch, crop(full, box))
        ctx = patch_context_box(box, plan)  # context centre within k/2 px of the patch centre
        assert abs(ctx.y * geo.k + geo.k * geo.s / 2 - (box.y + geo.s / 2)) <= geo.k / 2


@pytest.mark.parametrize("conditioning", ["paper", "aligned"])
def test_local_conditioning_at_inference_equals_training_for_the_crop_centred_there(conditioning):
    geo = MamboGeometry(s=32, k=3, overlap=8, conditioning=conditioning)
    plan = geo.plan(200, 150)
    full = to_canvas(_phantom(200, 150, seed=1), plan.canvas)
    mid = area_downsample(full, geo.k)
    glob = area_downsample(full, plan.global_factor)
    assert torch.allclose(area_downsample(mid, plan.global_factor // geo.k), glob, atol=1e-6)
    for i, j in plan.local_grid.raster():
        box = plan.local_grid.box(i, j)
        target, train = local_training_example(full, (box.y + 16) * 3, (box.x + 16) * 3, plan)
        assert (local_conditioning(glob, box, plan) - train).abs().max() < 1e-6
        assert (target - crop(mid, box)).abs().max() < 1e-6


def test_shifted_global_puts_the_crop_centre_at_the_image_centre():
    geo = MamboGeometry(s=32, k=3, overlap=8)
    plan = geo.plan(96, 96)  # canvas 96: global and mid are both 32 x 32
    glob = torch.full((32, 32), -1.0)
    glob[6:8, 24:26] = 1.0  # a 2x2 dot centred at global point (7, 25)
    cond = local_conditioning(glob, Box(7 - 16, 25 - 16, 32, 32), plan)  # mid box centred on (7, 25)
    expected = torch.full((32, 32), -1.0)
    expected[15:17, 15:17] = 1.0
    assert torch.equal(cond[0], expected)
    assert torch.equal(cond[1], glob)


def test_reference_222_vs_224_drift_would_fail_the_consistency_check():
    """The reference builds context on a 222-px grid but places patches on 224: up to 34 px off at 3840."""
    drift = [abs(j * 222 - j * 224) for j in range(18)]  # the reference's 18 x 18 grid at 3840
    assert max(drift) == 34
    geo = MamboGeometry(s=32, k=3, overlap=8)
    small = geo.plan(288, 288)
    full = to_canvas(_phantom(288, 288, seed=2), small.canvas)
    mid, glob = area_downsample(full, 3), area_downsample(full, small.global_factor)
    box = small.patch_grid.box(small.patch_grid.rows - 1, small.patch_grid.cols - 1)
    drifted = box.y + 16 - 2 * (small.patch_grid.rows - 1)  # 2 px per step, as 222 vs 224
    _, train = patch_training_example(full, drifted, drifted, small)
    assert (patch_conditioning(mid, glob, box, small) - train).abs().max() > 0.05


def test_images_smaller_than_one_tile_are_refused():
    with pytest.raises(ValueError, match="smaller than one"):
        MamboGeometry(s=32, overlap=8).plan(31, 100)


@pytest.mark.parametrize(("y", "x", "h", "w"), [(0, 0, 32, 32), (7, 40, 32, 20), (-5, -9, 16, 16), (90, 80, 32, 32)])
def test_upsampled_crop_equals_cropping_the_whole_upsampled_image(y, x, h, w):
    """The aligned context channel costs one tile, yet equals the whole low image upsampled and cropped."""
    low = torch.rand(40, 36)
    factor = 3
    whole = torch.nn.functional.interpolate(low[None, None], scale_factor=factor, mode="bilinear")[0, 0]
    padded = crop(whole, Box(y, x, h, w))
    got = upsampled_crop(low, Box(y, x, h, w), factor)
    valid = torch.zeros_like(whole)
    valid[factor:-factor, factor:-factor] = 1  # at the low image's own border the window reads background
    inside = crop(valid, Box(y, x, h, w), fill=0.0).bool()
    assert got.shape == (h, w) and inside.any()
    assert torch.allclose(got[inside], padded[inside], atol=1e-6)


def test_aligned_conditioning_adds_one_context_channel_and_old_manifests_read_as_paper():
    aligned = MamboGeometry(s=32, k=3, overlap=8, conditioning="aligned")
    assert aligned.context_channels == 3 and MamboGeometry().context_channels == 2
    assert MamboGeometry.from_dict({"s": 32, "k": 3, "overlap": 8}).conditioning == "paper"
    assert MamboGeometry.from_dict(aligned.to_dict()) == aligned
    with pytest.raises(ValueError, match="conditioning"):
        MamboGeometry(conditioning="sideways")
