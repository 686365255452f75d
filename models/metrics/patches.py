"""256 x 256 patches at MATCHING locations in real and synthetic images (the paper's patch-level FID).

MAMBO's Table 1 compares patches "sampled at the same location" in a real and a generated image.
Sampling real and synthetic patches independently would mix a location effect (skin line vs dense
centre vs chest wall) into the FID. Here each (real, synthetic) pair of images gets the same
relative patch positions, chosen where BOTH images have breast under most of the patch, after
both are flipped so the chest wall is on the left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.errors import BadInputError
from models.imaging.mask import breast_mask


@dataclass(frozen=True)
class PatchLocation:
    real_index: int
    synthetic_index: int
    rel_center: tuple[float, float]  # (y, x) as fractions of the chest-wall-left image
    real_box: tuple[int, int]  # top-left (y, x) in the real image as read (before any flip)
    synthetic_box: tuple[int, int]


@dataclass
class MatchedPatches:
    real: list[np.ndarray] = field(default_factory=list)
    synthetic: list[np.ndarray] = field(default_factory=list)
    locations: list[PatchLocation] = field(default_factory=list)
    skipped_pairs: int = 0  # pairs where no position had enough breast in both images


def chest_wall_on_left(mask: np.ndarray) -> bool:
    """True when the breast mass sits against the left edge (more breast in the left half)."""
    half = mask.shape[1] // 2
    return bool(mask[:, :half].sum() >= mask[:, half:].sum())


def _window_fraction(mask: np.ndarray, size: int) -> np.ndarray:
    """For each top-left (y, x), the fraction of a size x size window that is breast (summed-area table)."""
    sat = np.pad(mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    total = sat[size:, size:] - sat[:-size, size:] - sat[size:, :-size] + sat[:-size, :-size]
    return total / float(size * size)


def matched_patches(
    real: Sequence[np.ndarray],
    synthetic: Sequence[np.ndarray],
    *,
    per_image: int = 4,
    size: int = 256,
    min_breast_fraction: float = 0.75,
    seed: int = 0,
) -> MatchedPatches:
    """``per_image`` patches from each of max(len(real), len(synthetic)) pairs (the shorter set cycles).

    Positions are drawn uniformly among those where the patch holds at least
    ``min_breast_fraction`` breast in both images, mapped by relative coordinates when the two
    images differ in size. Patches come back chest wall left (as compared); boxes are in the files' own
    orientation.
    """
    if not real or not synthetic:
        raise BadInputError("patch sampling needs at least one real and one synthetic image")
    rng = np.random.default_rng(seed)
    out = MatchedPatches()
    for k in range(max(len(real), len(synthetic))):
        i, j = k % len(real), k % len(synthetic)
        r, s = np.asarray(real[i], np.float32), np.asarray(synthetic[j], np.float32)
        for name, img in (("real", r), ("synthetic", s)):
            if img.shape[0] < size or img.shape[1] < size:
                raise BadInputError(f"{name} image {img.shape} is smaller than the {size}x{size} patch size")
        mr, ms = breast_mask(r), breast_mask(s)
        flip_r, flip_s = not chest_wall_on_left(mr), not chest_wall_on_left(ms)
        mr_l, ms_l = (mr[:, ::-1] if flip_r else mr), (ms[:, ::-1] if flip_s else ms)
        r_l, s_l = (r[:, ::-1] if flip_r else r), (s[:, ::-1] if flip_s else s)
        # Valid top-left corners in the real image whose relative position is also valid in the synthetic one.
        ok_r = _window_fraction(mr_l, size) >= min_breast_fraction
        ok_s = _window_fraction(ms_l, size) >= min_breast_fraction
        ys, xs = np.nonzero(ok_r)
        if ys.size:
            sy = np.round(ys * (s.shape[0] - size) / max(r.shape[0] - size, 1)).astype(int)
            sx = np.round(xs * (s.shape[1] - size) / max(r.shape[1] - size, 1)).astype(int)
            both = ok_s[sy, sx]
            ys, xs, sy, sx = ys[both], xs[both], sy[both], sx[both]
        if ys.size == 0:
            out.skipped_pairs += 1
            continue
        for c in rng.choice(ys.size, size=min(per_image, ys.size), replace=False):
            ry, rx, qy, qx = int(ys[c]), int(xs[c]), int(sy[c]), int(sx[c])
            out.real.append(r_l[ry : ry + size, rx : rx + size].copy())
            out.synthetic.append(s_l[qy : qy + size, qx : qx + size].copy())
            # Boxes in each file's own orientation, for people to find the patch.
            rx0 = r.shape[1] - size - rx if flip_r else rx
            qx0 = s.shape[1] - size - qx if flip_s else qx
            out.locations.append(
                PatchLocation(
                    real_index=i,
                    synthetic_index=j,
                    rel_center=((ry + size / 2) / r.shape[0], (rx + size / 2) / r.shape[1]),
                    real_box=(ry, rx0),
                    synthetic_box=(qy, qx0),
                )
            )
    return out
