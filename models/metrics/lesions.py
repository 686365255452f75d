"""Measuring an inserted lesion against a real one: contrast, size, seams at the edit border, crops.

The closed loop of ``mammogen evaluate lesions`` puts a lesion into a healthy phantom view where the
same phantom's lesion case has a real one (same kind, centre, diameter) and compares the two. These
helpers are pure numpy, one rule for both sides, so a difference in a figure is a difference between
the images, never between two ways of measuring:

- contrast: the mean change inside the lesion's mask, ``mean(after - before)``;
- size: the equivalent diameter ``2 sqrt(area / pi)`` of the changed area, the pixels of the edit
  region where the (lightly smoothed) change reaches half its peak inside the mask (a half-maximum
  outline, which needs no absolute threshold and so works for faint and bright lesions alike);
- seams: the edge energy (squared gradient of the lightly smoothed image) on the blend ring at the
  edit region's border, divided by the median of the same ring translated to other places inside the
  breast of the same image. About 1: the border looks like any other tissue; well above 1: a seam.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage, signal

#: Smoothing (px) before the half-maximum outline and the edge energy: pixel noise is not a lesion edge.
SMOOTH_SIGMA = 1.0
#: Percentile of the smoothed change inside the mask taken as the lesion's peak (robust to one hot pixel).
PEAK_PERCENTILE = 99.0


def equivalent_diameter(mask: np.ndarray) -> float:
    """Diameter of the disc with the mask's area (px)."""
    return 2.0 * math.sqrt(float(np.count_nonzero(mask)) / math.pi)


@dataclass(frozen=True)
class LesionChange:
    """What changed between ``before`` and ``after`` at one lesion."""

    contrast: float  # mean(after - before) inside the mask
    relative_contrast: float  # contrast / mean(before) inside the mask
    peak: float  # PEAK_PERCENTILE of the smoothed change inside the mask
    changed_diameter_px: float  # equivalent diameter of the half-maximum changed area
    mask_diameter_px: float  # equivalent diameter of the mask itself

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def changed_area(
    after: np.ndarray, before: np.ndarray, mask: np.ndarray, region: np.ndarray, *, sigma: float = SMOOTH_SIGMA
) -> np.ndarray:
    """Pixels of ``region`` where the smoothed change reaches half its peak inside ``mask`` (empty if the
    change inside the mask is not positive)."""
    diff = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    smooth = ndimage.gaussian_filter(diff, sigma) if sigma > 0 else diff
    inside = smooth[mask]
    peak = float(np.percentile(inside, PEAK_PERCENTILE)) if inside.size else 0.0
    if peak <= 0:
        return np.zeros(diff.shape, bool)
    return (smooth >= 0.5 * peak) & region


def lesion_change(
    after: np.ndarray, before: np.ndarray, mask: np.ndarray, region: np.ndarray, *, sigma: float = SMOOTH_SIGMA
) -> LesionChange:
    """Contrast and size of the change from ``before`` to ``after`` at a lesion (``mask``), the changed
    area looked for inside ``region`` (the edit region: where a change may be)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("a lesion mask needs at least one pixel")
    diff = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    contrast = float(diff[mask].mean())
    base = float(np.asarray(before, np.float64)[mask].mean())
    smooth = ndimage.gaussian_filter(diff, sigma) if sigma > 0 else diff
    peak = float(np.percentile(smooth[mask], PEAK_PERCENTILE))
    area = changed_area(after, before, mask, region, sigma=sigma)
    return LesionChange(
        contrast=contrast,
        relative_contrast=contrast / base if base > 0 else float("nan"),
        peak=peak,
        changed_diameter_px=equivalent_diameter(area),
        mask_diameter_px=equivalent_diameter(mask),
    )


# -- seams at the edit border ------------------------------------------------------------------------


def border_ring(region: np.ndarray, inner_px: float, outer_px: float = 2.0) -> np.ndarray:
    """The band around a region's border: up to ``inner_px`` inside (where an insertion blends) and
    ``outer_px`` outside (where a step at the border would show)."""
    region = np.asarray(region, bool)
    inside = ndimage.distance_transform_edt(region)
    outside = ndimage.distance_transform_edt(~region)
    return (region & (inside <= inner_px)) | (~region & (outside <= outer_px))


def edge_energy(image: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """Squared gradient magnitude of the lightly smoothed image."""
    x = np.asarray(image, np.float64)
    if sigma > 0:
        x = ndimage.gaussian_filter(x, sigma)
    gy, gx = np.gradient(x)
    return gy**2 + gx**2


def ring_positions(
    ring: np.ndarray, allowed: np.ndarray, max_rings: int = 16, stride: int | None = None
) -> list[tuple[int, int]]:
    """Shifts (dy, dx) that move ``ring`` to lie wholly inside ``allowed`` (e.g. the eroded breast less
    every edit region), on a grid, at most ``max_rings`` of them spread evenly over the valid ones
    (deterministic: no random draw)."""
    rows, cols = np.nonzero(ring)
    if rows.size == 0:
        return []
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    h, w = ring.shape
    bh, bw = r1 - r0, c1 - c0
    step = stride or max(4, min(bh, bw) // 4)
    local = ring[r0:r1, c0:c1]
    # a shifted ring fits where no ring pixel lands on a disallowed pixel: one correlation for every shift
    bad = signal.correlate((~np.asarray(allowed, bool)).astype(np.float32), local.astype(np.float32), mode="valid")
    valid = []
    for y in range(0, h - bh + 1, step):
        for x in range(0, w - bw + 1, step):
            if bad[y, x] < 0.5 and (y, x) != (r0, c0):
                valid.append((int(y - r0), int(x - c0)))
    if len(valid) > max_rings:
        pick = np.linspace(0, len(valid) - 1, max_rings).round().astype(int)
        valid = [valid[i] for i in pick]
    return valid


def shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by (dy, dx) (pixels moved off the image are dropped)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    ys, xs = ys + dy, xs + dx
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    out[ys[keep], xs[keep]] = True
    return out


@dataclass(frozen=True)
class RingSeam:
    ratio: float  # ring energy / median energy of the same ring elsewhere (nan: nowhere else it fits)
    ring_energy: float
    elsewhere_median: float
    elsewhere: int  # how many other positions the median is over

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ring_seam(
    image: np.ndarray, ring: np.ndarray, shifts: list[tuple[int, int]], sigma: float = SMOOTH_SIGMA
) -> RingSeam:
    """Edge energy on ``ring`` against the same ring moved by each of ``shifts`` in the same image."""
    energy = edge_energy(image, sigma)
    at = float(energy[ring].mean())
    others = [float(energy[shifted(ring, dy, dx)].mean()) for dy, dx in shifts]
    med = float(np.median(others)) if others else float("nan")
    ratio = at / med if others and med > 0 else float("nan")
    return RingSeam(ratio, at, med, len(others))


def centred_crop(image: np.ndarray, center: tuple[float, float], size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop centred on ``center``, shifted to lie inside the image."""
    h, w = image.shape
    if size > min(h, w):
        raise ValueError(f"a {size}-px crop does not fit a {h}x{w} image")
    y = int(min(max(round(center[0] - size / 2.0), 0), h - size))
    x = int(min(max(round(center[1] - size / 2.0), 0), w - size))
    return np.ascontiguousarray(image[y : y + size, x : x + size])


def summarize(values: list[float]) -> dict[str, float]:
    """Median, quartiles, 5th/95th percentile and count of the finite values (nan when none)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        nan = float("nan")
        return {"n": 0, "median": nan, "q25": nan, "q75": nan, "p5": nan, "p95": nan, "mean": nan}
    q = np.percentile(v, [5, 25, 50, 75, 95])
    p5, q25, med, q75, p95 = (float(x) for x in q)
    return {"n": int(v.size), "median": med, "q25": q25, "q75": q75, "p5": p5, "p95": p95, "mean": float(v.mean())}
