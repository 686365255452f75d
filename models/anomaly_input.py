"""Input preparation for anomaly maps: a real image -> the canonical input and its global (stage-1) image.

The global image is built exactly as the stage-1 training examples are (through models.geometry),
so the healthy model is asked to reconstruct what it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.errors import BadInputError
from models.geometry import MamboGeometry, area_downsample, to_canvas
from models.imaging.mask import breast_mask
from models.imaging.orientation import Orientation, canonicalize, restore
from models.intensity import DEFAULT_INTENSITY, IntensityMapping


@dataclass(frozen=True)
class Prepared:
    """A real input as the models see it (paper §9) and what is needed to map results back to it.

    ``canonical`` is the input with its chest wall on the left, background 0, intensities mapped by
    the bundle's IntensityMapping; ``global_image`` is its canvas block-averaged to s x s, exactly as
    the stage-1 training examples are built (training/datasets.py, through models.geometry).
    ``companions`` went through the same mask, flip and intensity window (e.g. an oracle healthy twin).
    """

    canonical: np.ndarray  # (H, W) float32 [0, 1]
    breast: np.ndarray  # (H, W) bool, canonical orientation
    orientation: Orientation
    canvas: int  # L, the square canvas side (a multiple of k*s)
    global_image: np.ndarray  # (s, s) float32 [0, 1]
    global_breast: np.ndarray  # (s, s) bool
    companions: tuple[np.ndarray, ...] = ()
    companions_global: tuple[np.ndarray, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return self.canonical.shape  # type: ignore[return-value]

    @property
    def global_factor(self) -> int:
        return self.canvas // self.global_image.shape[0]

    def to_input(self, canonical_map: np.ndarray) -> np.ndarray:
        """Undo the orientation step: a canonical (H, W) map -> the input's orientation."""
        return np.ascontiguousarray(restore(canonical_map, self.orientation))

    def global_to_canonical(self, global_map: np.ndarray) -> np.ndarray:
        """An (s, s) map on the global grid -> (H, W) on the canonical input grid (bilinear, then crop)."""
        t = torch.from_numpy(np.ascontiguousarray(global_map, dtype=np.float32))[None, None]
        up = F.interpolate(t, size=(self.canvas, self.canvas), mode="bilinear", align_corners=False)
        h, w = self.shape
        return up[0, 0, :h, :w].numpy()


def validate_image(image: np.ndarray) -> np.ndarray:
    """The checks every model entry point runs first: a finite, non-empty 2-D grayscale image."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise BadInputError(f"expected a 2-D grayscale image, got an array of shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 2:
        raise BadInputError(f"the image is empty ({'x'.join(str(n) for n in arr.shape)} pixels)")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise BadInputError("the image contains NaN or infinite values")
    return arr


def canonicalize_input(
    image: np.ndarray,
    intensity: IntensityMapping = DEFAULT_INTENSITY,
    info: Any = None,
    companions: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, np.ndarray, Orientation, tuple[np.ndarray, ...]]:
    """Paper §9 on a decoded [0, 1] image, through the shared steps training uses (the one breast mask,
    the one orientation rule, the bundle's intensity mapping): mask -> background 0 -> chest wall
    left -> intensity window over the breast.

    Returns (canonical image, canonical breast mask, orientation, canonical companions). Companions
    (same size) share the input's mask, flip and window; the window is taken over all of their
    breast pixels, which for ``minmax`` equals the input's own when companions are no brighter.
    BadInputError when the image is unusable or holds no breast.
    """
    img = validate_image(image)
    comps = [validate_image(c) for c in companions]
    if any(c.shape != img.shape for c in comps):
        raise BadInputError("companion images must have the input's size")
    breast = breast_mask(img)
    if not breast.any():
        raise BadInputError("no breast found in the image (it is blank or constant)")
    _, orientation = canonicalize(img, info, breast)
    stack = [restore(a, orientation) for a in (img, *comps)]  # restore == flip when flipped
    breast = np.ascontiguousarray(restore(breast, orientation))
    joint = np.concatenate(stack, axis=1)
    joint_mask = np.concatenate([breast] * len(stack), axis=1)
    if intensity.raw_window == "bits":  # the reader already scaled by the stored bits
        mapped = np.clip(joint, 0.0, 1.0)
    else:
        mapped = intensity.normalize_raw(joint, mask=joint_mask)
    mapped = np.where(joint_mask, mapped, 0.0).astype(np.float32)
    w = img.shape[1]
    parts = [np.ascontiguousarray(mapped[:, i * w : (i + 1) * w]) for i in range(len(stack))]
    return parts[0], breast, orientation, tuple(parts[1:])


def _global(canonical: np.ndarray, canvas: int, factor: int, fill: float) -> np.ndarray:
    """A canonical [0, 1] map on its canvas, block-averaged to the global grid (the training recipe)."""
    on_canvas = to_canvas(torch.from_numpy(np.ascontiguousarray(canonical, dtype=np.float32)), canvas, fill=fill)
    return area_downsample(on_canvas, factor).numpy().astype(np.float32)


def prepare(
    image: np.ndarray,
    geometry: MamboGeometry,
    intensity: IntensityMapping = DEFAULT_INTENSITY,
    *,
    info: Any = None,
    companions: Sequence[np.ndarray] = (),
) -> Prepared:
    """Canonicalise an input and build its global (stage-1) image the way training does."""
    canonical, breast, orientation, comps = canonicalize_input(image, intensity, info, companions)
    h, w = canonical.shape
    L = geometry.canvas_side(h, w)
    factor = L // geometry.s
    # background is 0 in image range == -1 in model range, so averaging in either range agrees
    return Prepared(
        canonical=canonical,
        breast=breast,
        orientation=orientation,
        canvas=L,
        global_image=_global(canonical, L, factor, 0.0),
        global_breast=_global(breast.astype(np.float32), L, factor, 0.0) >= 0.5,
        companions=comps,
        companions_global=tuple(_global(c, L, factor, 0.0) for c in comps),
    )
