"""Seam score: boundary MSE across stitching lines vs the same statistic inside tiles."""

from __future__ import annotations

import numpy as np
import pytest

from models.imaging.mask import breast_mask
from models.metrics.seams import boundaries_from_geometry, mambo_seam_grids, seam_score, tile_edges
from tests.metrics_images import phantom, power_law_noise

TILE, OVERLAP, SIZE = 64, 16, 256
STARTS = list(range(0, SIZE - TILE + 1, TILE - OVERLAP))  # 0, 48, 96, 144, 192


def _seamless(seed: int) -> np.ndarray:
    return 0.5 + 0.05 * power_law_noise(np.random.default_rng(seed), (SIZE, SIZE), beta=2.5)


def _hard_overwrite_stitch(seed: int, offset_std: float = 0.02) -> np.ndarray:
    """Tiles denoised independently (own noise, own brightness offset) pasted in raster order over each other."""
    rng = np.random.default_rng(seed)
    out = np.zeros((SIZE, SIZE))
    for y in STARTS:
        for x in STARTS:
            tile = 0.5 + rng.normal(0, offset_std) + 0.05 * power_law_noise(rng, (TILE, TILE), beta=2.5)
            out[y : y + TILE, x : x + TILE] = tile
    return out


def test_seamless_image_scores_about_one():
    score = seam_score(_seamless(0), STARTS[1:], STARTS[1:])
    assert 0.7 < score.overall.ratio < 1.4
    assert score.rows is not None and score.cols is not None


def test_hard_overwrite_stitch_scores_far_above_a_seamless_image():
    seamless = [seam_score(_seamless(s), STARTS[1:], STARTS[1:]).overall.ratio for s in range(3)]
    stitched = [seam_score(_hard_overwrite_stitch(s), STARTS[1:], STARTS[1:]).overall.ratio for s in range(3)]
    assert min(stitched) > 3.0 * max(seamless)


def test_per_tile_brightness_offsets_alone_are_detected():
    base = _seamless(1)
    rng = np.random.default_rng(2)
    stitched = base.copy()
    for y in STARTS:
        for x in STARTS:
            stitched[y : y + TILE, x : x + TILE] = base[y : y + TILE, x : x + TILE] + rng.normal(0, 0.01)
    assert seam_score(stitched, STARTS[1:], STARTS[1:]).overall.ratio > 1.5
    assert seam_score(base, STARTS[1:], STARTS[1:]).overall.ratio < 1.4


def test_only_the_given_grid_is_scored_so_seams_elsewhere_do_not_count():
    stitched = _hard_overwrite_stitch(3)
    wrong_grid = [s + 24 for s in STARTS[1:-1]]  # mid-tile lines: no seams there
    assert seam_score(stitched, wrong_grid, wrong_grid).overall.ratio < 1.5
    assert seam_score(stitched, STARTS[1:], STARTS[1:]).overall.ratio > 3.0


def test_breast_mask_keeps_the_skin_line_and_background_out_of_the_score():
    img = phantom(4, (256, 256)).astype(np.float64)
    mask = breast_mask(img)
    # Grid lines cross the skin line; unmasked, the breast/background edge inflates the boundary MSE.
    grid = [64, 128, 192]
    masked = seam_score(img, grid, grid, mask=mask)
    assert 0.6 < masked.overall.ratio < 1.6
    assert masked.overall.boundary_pairs < seam_score(img, grid, grid).overall.boundary_pairs


def test_a_single_bad_seam_shows_in_the_worst_line_ratio():
    img = _seamless(5)
    img[:, 144:] += 0.05  # one vertical seam at column 144
    score = seam_score(img, STARTS[1:], STARTS[1:])
    assert score.cols is not None and score.cols.worst_line_ratio > 2 * score.cols.ratio > 4.0
    assert score.overall.worst_line_ratio >= score.overall.ratio


def test_tile_edges_cover_both_edges_of_each_overlap_band():
    assert tile_edges([0, 48, 96], 64) == [48, 64, 96, 112]
    assert tile_edges([0, 224, 288], 256) == [224, 256, 288, 480]  # a clamped last tile overlaps more


def test_geometry_adapter_reads_the_mambo_tile_grid():
    from models.geometry import TileGrid

    grid = TileGrid.cover(600, 700, 256, 32)
    rows, cols = boundaries_from_geometry(grid)
    assert rows == tile_edges(grid.ys, 256) and cols == tile_edges(grid.xs, 256)
    assert boundaries_from_geometry(grid, scale=3)[0] == [3 * r for r in rows]
    with pytest.raises(TypeError):
        boundaries_from_geometry(object())


def test_mambo_seam_grids_give_patch_and_local_seams_inside_the_image():
    grids = mambo_seam_grids(1000, 800, s=256, k=3, overlap=32)
    assert set(grids) == {"patch", "local"}
    rows, cols = grids["patch"]
    assert rows and cols and max(rows) < 1000 and max(cols) < 800
    assert all(r % 3 == 0 for r in grids["local"][0])


def test_no_boundary_inside_the_image_is_an_error():
    with pytest.raises(ValueError, match="no stitching boundary"):
        seam_score(_seamless(6), [], [999])


def test_strip_means_reveal_tile_offsets_that_pixel_noise_hides():
    rng = np.random.default_rng(7)
    img = _seamless(7)
    for y in STARTS:
        for x in STARTS:
            img[y : y + TILE, x : x + TILE] += rng.normal(0, 0.08)  # per-tile offsets ...
    img += rng.normal(0, 0.15, img.shape)  # ... under heavy pixel noise (an undertrained model)
    edges = tile_edges(STARTS, TILE)  # added offsets step at both edges of each overlap band
    paper = seam_score(img, edges, edges).overall.ratio
    banded = seam_score(img, edges, edges, band=8).overall.ratio
    clean = seam_score(_seamless(7) + rng.normal(0, 0.15, img.shape), edges, edges, band=8).overall.ratio
    assert paper < 1.2 and banded > 1.8 and 0.7 < clean < 1.4
