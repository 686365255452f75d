"""Anomaly-map post-processing: residual -> heat map -> binary mask -> overlay, with no model involved.

Kept apart from the diffusion part (``models/anomaly.py``) so the recipe can be tested on a
"perfect healthy reconstruction" and reused by the evaluation. The steps follow the stronger
recipe (docs/SUPERRES_ANOMALY.md): L1 residual (or the paper's positive part after histogram
matching), averaged over seeds, multiplied by an eroded breast mask (the skin line is where the
diffusion model changes most), median filtered, thresholded, small blobs dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.exposure import match_histograms
from skimage.filters import threshold_otsu

from models.imaging.mask import drop_small_components

ResidualKind = Literal["l1", "positive"]
Ensemble = Literal["mean", "median"]
BinarizeMode = Literal["fixed", "otsu", "percentile"]
BINARIZE_MODES: tuple[str, ...] = ("fixed", "otsu", "percentile")


@dataclass(frozen=True)
class PostProcess:
    """Post-processing parameters, in pixels of the map they are applied to (the model's s x s grid).

    Defaults are the stronger recipe at 256^2; ``PAPER_POST`` is the paper's §3.3 variant.
    """

    residual: ResidualKind = "l1"
    histogram_match: bool = False  # match the reconstruction's breast histogram to the input's first
    ensemble: Ensemble = "mean"
    erode_px: int = 10  # rim removed from the breast mask (the paper's 20 x 20 kernel at 256^2, §9, removes ~10)
    median_size: int = 5
    relative_floor: float = 0.0  # paper: drop changes below 30 % of the map's maximum
    blur_sigma: float = 0.0  # paper: a Gaussian blur at the end
    min_component_px: int = 20

    def scaled(self, factor: float) -> PostProcess:
        """The same recipe on a map ``factor`` times larger per side (areas scale with factor^2)."""
        odd = max(1, round(self.median_size * factor) | 1)
        return PostProcess(
            residual=self.residual,
            histogram_match=self.histogram_match,
            ensemble=self.ensemble,
            erode_px=round(self.erode_px * factor),
            median_size=odd if self.median_size > 1 else 1,
            relative_floor=self.relative_floor,
            blur_sigma=self.blur_sigma * factor,
            min_component_px=round(self.min_component_px * factor * factor),
        )


STRONG_POST = PostProcess()
PAPER_POST = PostProcess(
    residual="positive", histogram_match=True, erode_px=10, median_size=1, relative_floor=0.3, blur_sigma=2.0
)


def _check_2d(name: str, a: np.ndarray) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map, got shape {arr.shape}")
    return arr


def residual_map(
    original: np.ndarray,
    reconstruction: np.ndarray,
    breast: np.ndarray,
    *,
    kind: ResidualKind = "l1",
    histogram_match: bool = False,
) -> np.ndarray:
    """|x - x_hat| (``l1``) or (x - x_hat)+ (``positive``: masses are brighter than tissue), zero outside the breast.

    Histogram matching (paper §3.3) first maps the reconstruction's breast intensities onto the
    input's, so a global brightness drift of the diffusion model is not reported as an anomaly.
    """
    x = _check_2d("original", original).astype(np.float32)
    x_hat = _check_2d("reconstruction", reconstruction).astype(np.float32)
    b = _check_2d("breast mask", breast).astype(bool)
    if kind not in ("l1", "positive"):
        raise ValueError(f"unknown residual kind {kind!r}")
    if not (x.shape == x_hat.shape == b.shape):
        raise ValueError(f"shape mismatch: {x.shape}, {x_hat.shape}, {b.shape}")
    if histogram_match and b.any():
        x_hat = x_hat.copy()
        x_hat[b] = match_histograms(x_hat[b], x[b]).astype(np.float32)
    diff = x - x_hat
    res = np.abs(diff) if kind == "l1" else np.maximum(diff, 0.0)
    return np.where(b, res, 0.0).astype(np.float32)


def combine_residuals(residuals: Sequence[np.ndarray], how: Ensemble = "mean") -> np.ndarray:
    """Average the per-seed maps (the median is more robust to one bad reconstruction)."""
    if len(residuals) == 0:
        raise ValueError("no residual maps to combine")
    stack = np.stack([_check_2d("residual", r) for r in residuals]).astype(np.float32)
    if how == "mean":
        return stack.mean(axis=0)
    if how == "median":
        return np.median(stack, axis=0).astype(np.float32)
    raise ValueError(f"unknown ensemble {how!r}")


def eroded_region(breast: np.ndarray, erode_px: int) -> np.ndarray:
    """The breast mask minus a rim of ``erode_px`` pixels (erosion by a square, outside the image = background).

    Computed as chessboard distance to the background > erode_px: O(pixels) whatever the rim width,
    where a structuring element of a 150-px rim at 3840^2 would take minutes.
    """
    b = _check_2d("breast mask", breast).astype(bool)
    if erode_px <= 0 or not b.any():
        return b
    padded = np.pad(b, 1, constant_values=False)
    dist = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
    return dist > erode_px


def heat_map(residual: np.ndarray, region: np.ndarray, post: PostProcess = STRONG_POST) -> np.ndarray:
    """Residual -> float heat map: zero outside ``region``, median filtered, optional paper floor/blur."""
    r = _check_2d("residual", residual).astype(np.float32)
    reg = _check_2d("region", region).astype(bool)
    heat = np.where(reg, r, 0.0).astype(np.float32)
    if post.median_size > 1:
        heat = ndimage.median_filter(heat, size=post.median_size, mode="constant", cval=0.0)
    if post.relative_floor > 0 and heat.max() > 0:
        heat = np.where(heat >= post.relative_floor * heat.max(), heat, 0.0).astype(np.float32)
    if post.blur_sigma > 0:
        heat = ndimage.gaussian_filter(heat, sigma=post.blur_sigma)
    return np.where(reg, heat, 0.0).astype(np.float32)


def otsu_threshold(heat: np.ndarray, region: np.ndarray) -> float:
    """Per-image Otsu threshold of the heat inside ``region`` (label-free; Wolleb et al.)."""
    values = np.asarray(heat)[np.asarray(region, dtype=bool)]
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return float(values.max()) if values.size else 0.0  # constant map: `>` then selects nothing
    return float(threshold_otsu(values))


def calibrate_percentile(
    healthy_heat: Sequence[np.ndarray], regions: Sequence[np.ndarray], percentile: float = 99.0
) -> float:
    """The threshold that ~(100 - percentile) % of healthy breast pixels exceed (pooled over images).

    Run the same pipeline on healthy images, pass their heat maps and regions here, and use the
    result as ``threshold`` with mode ``percentile``: 99 gives about 1 % pixel false-positive rate.
    """
    if not 0 < percentile < 100:
        raise ValueError("percentile must lie in (0, 100)")
    values = [np.asarray(h)[np.asarray(r, dtype=bool)] for h, r in zip(healthy_heat, regions, strict=True)]
    pooled = np.concatenate(values) if values else np.zeros(0)
    if pooled.size == 0:
        raise ValueError("no healthy breast pixels to calibrate on")
    return float(np.percentile(pooled, percentile))


def binarize(
    heat: np.ndarray,
    region: np.ndarray,
    mode: BinarizeMode,
    threshold: float | None = None,
    min_component_px: int = STRONG_POST.min_component_px,
) -> tuple[np.ndarray, float]:
    """Heat map -> (binary anomaly mask, threshold used): ``heat > t`` inside ``region``, small blobs dropped.

    ``fixed`` and ``percentile`` need ``threshold`` (for ``percentile`` from :func:`calibrate_percentile`);
    ``otsu`` computes it per image.
    """
    h = _check_2d("heat map", heat)
    reg = _check_2d("region", region).astype(bool)
    if mode == "otsu":
        t = otsu_threshold(h, reg)
    elif mode in ("fixed", "percentile"):
        if threshold is None:
            raise ValueError(f"threshold mode {mode!r} needs a threshold")
        t = float(threshold)
    else:
        raise ValueError(f"unknown threshold mode {mode!r}; choose one of {BINARIZE_MODES}")
    binary = (h > t) & reg
    if min_component_px > 1:
        binary = drop_small_components(binary, min_component_px)
    return binary, t


def overlay(image: np.ndarray, heat: np.ndarray, binary: np.ndarray, scale: float | None = None) -> np.ndarray:
    """RGB picture for people: the mammogram in gray, the heat in red, the mask outlined in yellow.

    ``scale`` is the heat value drawn at full strength (default: the map's 99.9th percentile of
    non-zero heat, so a single hot pixel does not wash the rest out).
    """
    img = np.clip(_check_2d("image", image).astype(np.float32), 0.0, 1.0)
    h = _check_2d("heat map", heat).astype(np.float32)
    b = _check_2d("binary mask", binary).astype(bool)
    if scale is None:
        nz = h[h > 0]
        scale = float(np.percentile(nz, 99.9)) if nz.size else 1.0
    alpha = np.clip(h / max(scale, 1e-8), 0.0, 1.0)[..., None] * 0.7
    rgb = np.repeat(img[..., None], 3, axis=-1)
    rgb = (1 - alpha) * rgb + alpha * np.array([1.0, 0.0, 0.0], np.float32)
    edge = b & ~ndimage.binary_erosion(b, structure=np.ones((3, 3), bool), border_value=0)
    rgb[edge] = (1.0, 1.0, 0.0)
    return rgb.astype(np.float32)
