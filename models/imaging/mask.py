"""The breast mask, as the MAMBO paper builds it (§9): blur, Otsu x 0.175, largest blob, filled.

One function serves training (where to crop), inference (which tiles to skip), anomaly maps
(where to look) and evaluation, so they all agree on what "inside the breast" means.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

#: Fraction of the Otsu threshold that separates breast from background (paper §9).
OTSU_FACTOR = 0.175


def breast_mask(
    image: np.ndarray,
    *,
    otsu_factor: float = OTSU_FACTOR,
    blur_fraction: float = 1 / 50,
    erode_px: int = 0,
) -> np.ndarray:
    """Boolean mask of the breast in a 2-D image (any range; background dark).

    The Gaussian blur has sigma ~ size * blur_fraction / 6 (the paper's kernel ~ size/50 spans about
    six sigmas). A constant or empty image yields an all-False mask rather than an error.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"breast_mask expects a 2-D image, got shape {img.shape}")
    if img.size == 0:
        return np.zeros(img.shape, dtype=bool)
    lo, hi = float(img.min()), float(img.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(img.shape, dtype=bool)
    norm = (img - lo) / (hi - lo)
    sigma = max(img.shape) * blur_fraction / 6.0
    blurred = ndimage.gaussian_filter(norm, sigma=sigma) if sigma >= 0.3 else norm
    # Otsu on the 8-bit histogram, as the paper's OpenCV pipeline does.
    u8 = np.round(blurred * 255.0).astype(np.uint8)
    if u8.min() == u8.max():
        return np.zeros(img.shape, dtype=bool)
    threshold = threshold_otsu(u8) * otsu_factor
    binary = u8 > threshold
    mask = largest_component(binary)
    mask = ndimage.binary_fill_holes(mask)
    if erode_px > 0 and mask.any():
        mask = ndimage.binary_erosion(mask, structure=np.ones((erode_px, erode_px), bool), border_value=0)
    return mask


def largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 8-connected blob of a boolean image (all False if there is none)."""
    labels, n = ndimage.label(binary, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(binary.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def drop_small_components(binary: np.ndarray, min_pixels: int) -> np.ndarray:
    """Remove 8-connected blobs smaller than ``min_pixels`` (anomaly-map post-processing)."""
    labels, n = ndimage.label(binary, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(binary.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]
