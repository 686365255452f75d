"""Seam score: the paper's boundary MSE (§10) compared with the same statistic inside tiles.

MAMBO §10 measures the mean squared difference between neighbouring pixels across stitching
boundaries. On its own that number depends on the image's texture, so here it is divided by the
same statistic on neighbouring pixel pairs away from any boundary: a seamless image scores ~1,
a visible seam scores well above 1. Boundaries are plain row/column positions (a boundary at
``c`` separates columns ``c-1`` and ``c``), so any stitcher and any grid can be scored.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SeamStats:
    boundary_mse: float  # mean (x[c] - x[c-1])² over boundary pairs (the paper's number)
    interior_mse: float  # the same over pairs at least `margin` away from any boundary
    ratio: float  # boundary / interior: ~1 seamless, >1 seams
    worst_line_ratio: float  # the worst single boundary line, so one bad seam is not averaged away
    boundary_pairs: int
    interior_pairs: int


@dataclass(frozen=True)
class SeamScore:
    overall: SeamStats
    rows: SeamStats | None  # horizontal seams (boundaries between rows)
    cols: SeamStats | None  # vertical seams

    def to_dict(self) -> dict[str, dict[str, float | int] | None]:
        return {k: (asdict(v) if v is not None else None) for k, v in vars(self).items()}


def _pairs(image: np.ndarray, mask: np.ndarray | None, axis: int, band: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Squared differences across each line k|k+1 along ``axis`` and which of them count.

    ``band`` = 1: neighbouring pixels (the paper's statistic). ``band`` = w: the mean of the w pixels
    after the line minus the mean of the w pixels before it, which keeps a tile-level offset but
    divides pixel noise by w, so seams show even in noisy images. A difference counts only if all
    2w pixels are inside the mask. Returned with the line index on axis 0.
    """
    x = image if axis == 0 else image.T
    m = (np.ones(x.shape, bool) if mask is None else (mask if axis == 0 else mask.T)).astype(np.float64)
    w = max(1, int(band))
    n = x.shape[0]
    cx = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    cm = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(m, axis=0)])
    d2 = np.zeros((n - 1, x.shape[1]))
    valid = np.zeros((n - 1, x.shape[1]), bool)
    k = np.arange(w - 1, n - w)  # lines whose two strips fit: [k-w+1, k] and [k+1, k+w]
    if k.size:
        before = (cx[k + 1] - cx[k + 1 - w]) / w
        after = (cx[k + 1 + w] - cx[k + 1]) / w
        d2[k] = (after - before) ** 2
        valid[k] = (cm[k + 1 + w] - cm[k + 1 - w]) == 2 * w
    return d2, valid


def _direction(
    d2: np.ndarray, valid: np.ndarray, boundaries: Sequence[int], margin: int, min_line_pairs: int
) -> SeamStats | None:
    n_pairs = d2.shape[0]
    lines = sorted({int(b) - 1 for b in boundaries if 0 < int(b) <= n_pairs})  # pair index across boundary b
    if not lines:
        return None
    near = np.zeros(n_pairs, bool)
    for k in lines:
        near[max(k - margin, 0) : k + margin + 1] = True
    inner_vals = d2[~near][valid[~near]]
    b_vals = d2[lines][valid[lines]]
    interior = float(inner_vals.mean()) if inner_vals.size else float("nan")
    # A line that only grazes the mask (a few pairs along the skin line) says nothing about seams.
    per_line = [float(d2[k][valid[k]].mean()) for k in lines if valid[k].sum() >= min_line_pairs]
    boundary = float(b_vals.mean()) if b_vals.size else float("nan")
    return SeamStats(
        boundary_mse=boundary,
        interior_mse=interior,
        ratio=_safe_ratio(boundary, interior),
        worst_line_ratio=_safe_ratio(max(per_line), interior) if per_line else float("nan"),
        boundary_pairs=int(b_vals.size),
        interior_pairs=int(inner_vals.size),
    )


def _safe_ratio(a: float, b: float) -> float:
    if not np.isfinite(a) or not np.isfinite(b):
        return float("nan")
    if b == 0.0:
        return 1.0 if a == 0.0 else float("inf")
    return a / b


def seam_score(
    image: np.ndarray,
    row_boundaries: Iterable[int],
    col_boundaries: Iterable[int],
    *,
    mask: np.ndarray | None = None,
    margin: int = 2,
    min_line_pairs: int = 32,
    band: int = 1,
) -> SeamScore:
    """Boundary MSE vs interior MSE for one 2-D image and its stitching grid.

    ``mask`` (e.g. the breast mask) restricts both statistics to pixel pairs inside it, so the
    skin line and the black background do not count as seams or texture. Pairs within ``margin``
    pixels of a boundary are left out of the interior statistic; ``worst_line_ratio`` only considers
    lines with at least ``min_line_pairs`` pairs inside the mask. ``band`` > 1 compares strip means
    (see ``_pairs``): use it for noisy images, where pixel noise swamps a tile offset. Erode the breast mask a little
    (skin line) before passing it: a grid line running along the skin is an edge, not a seam.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"seam_score expects a 2-D image, got shape {img.shape}")
    if mask is not None and mask.shape != img.shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {img.shape}")
    margin = max(margin, band)  # interior strips must not reach a boundary
    rows = _direction(*_pairs(img, mask, 0, band), list(row_boundaries), margin, min_line_pairs)
    cols = _direction(*_pairs(img, mask, 1, band), list(col_boundaries), margin, min_line_pairs)
    parts = [p for p in (rows, cols) if p is not None and p.boundary_pairs > 0]
    if not parts:
        raise ValueError("no stitching boundary crosses the image (or the mask)")
    b_pairs = sum(p.boundary_pairs for p in parts)
    i_pairs = sum(p.interior_pairs for p in parts)
    boundary = sum(p.boundary_mse * p.boundary_pairs for p in parts) / b_pairs
    interior = sum(p.interior_mse * p.interior_pairs for p in parts if p.interior_pairs) / max(i_pairs, 1)
    if i_pairs == 0:
        interior = float("nan")
    # Worst line relative to the pooled interior statistic (per-direction values are relative to their own).
    worst = [_safe_ratio(p.worst_line_ratio * p.interior_mse, interior) for p in parts]
    overall = SeamStats(
        boundary_mse=boundary,
        interior_mse=interior,
        ratio=_safe_ratio(boundary, interior),
        worst_line_ratio=max((w for w in worst if np.isfinite(w)), default=float("nan")),
        boundary_pairs=b_pairs,
        interior_pairs=i_pairs,
    )
    return SeamScore(overall=overall, rows=rows, cols=cols)


def tile_edges(tile_starts: Iterable[int], size: int) -> list[int]:
    """Where seams can appear between consecutive tiles of side ``size`` starting at ``tile_starts``.

    Tile i overlaps tile i-1 on [start_i, end_(i-1)). A hard overwrite (last writer wins) leaves its
    seam at start_i; first-writer stitching with inpainting by replacement leaves it at end_(i-1),
    where the new tile's own pixels begin. Both edges are scored, so either kind is caught.
    """
    starts = sorted({int(t) for t in tile_starts})
    edges = {p for prev, cur in itertools.pairwise(starts) for p in (cur, prev + size)}
    return sorted(p for p in edges if p > 0)


def boundaries_from_geometry(grid: object, scale: int = 1) -> tuple[list[int], list[int]]:
    """Row and column seam positions of a ``models.geometry.TileGrid`` (ys, xs, size), times ``scale``.

    Duck-typed, so this module does not import the geometry module; ``scale`` maps a grid in mid
    pixels (stage 2) to full-resolution pixels (k).
    """
    ys, xs, size = getattr(grid, "ys", None), getattr(grid, "xs", None), getattr(grid, "size", None)
    if ys is None or xs is None or size is None:
        raise TypeError(f"{type(grid).__name__} does not expose tile starts (ys, xs) and a tile size")
    return [p * scale for p in tile_edges(ys, size)], [p * scale for p in tile_edges(xs, size)]


def mambo_seam_grids(height: int, width: int, *, s: int = 256, k: int = 3, overlap: int = 32) -> dict[str, Any]:
    """Seam positions of a MAMBO image of this size: stage-3 patch grid and stage-2 local grid (x k)."""
    from models.geometry import MamboGeometry  # the one geometry (MAMBO engineer); imported only when used

    plan = MamboGeometry(s=s, k=k, overlap=overlap).plan(height, width)
    return {
        "patch": boundaries_from_geometry(plan.patch_grid),
        "local": boundaries_from_geometry(plan.local_grid, scale=k),
    }
