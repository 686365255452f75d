"""Full-reference image quality for super-resolution: PSNR, SSIM, and the bicubic baseline.

PSNR/SSIM compare against a known original, so they only make sense where we made the low-resolution
input ourselves (downsampled phantoms). SSIM follows Wang et al. 2004 (Gaussian window sigma 1.5,
K1 = 0.01, K2 = 0.03, population covariance) through scikit-image, with the data range fixed to
the [0, 1] image range rather than guessed from the pixels, so scores compare across images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

DATA_RANGE = 1.0


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: {p.shape} vs {t.shape}")
    if p.ndim != 2:
        raise ValueError(f"expected 2-D images, got shape {p.shape}")
    return p, t


def mse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    p, t = _pair(pred, target)
    d = (p - t) ** 2
    if mask is not None:
        d = d[np.asarray(mask, dtype=bool)]
        if d.size == 0:
            raise ValueError("mask selects no pixels")
    return float(d.mean())


def psnr(
    pred: np.ndarray, target: np.ndarray, *, data_range: float = DATA_RANGE, mask: np.ndarray | None = None
) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images); ``mask`` restricts it to e.g. the breast."""
    err = mse(pred, target, mask)
    return math.inf if err == 0 else 10.0 * math.log10(data_range**2 / err)


def ssim(pred: np.ndarray, target: np.ndarray, *, data_range: float = DATA_RANGE) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian-weighted) over the image."""
    p, t = _pair(pred, target)
    if min(p.shape) < 7:
        raise ValueError(f"SSIM needs images of at least 7 x 7 pixels, got {p.shape}")
    return float(
        structural_similarity(
            p, t, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )


def downsample_area(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter downsampling by an integer factor (the anti-aliased way to make an SR input).

    The image is cropped to a multiple of ``factor`` first; callers that need exact sizes pass
    images whose sides are multiples of it.
    """
    if factor < 1:
        raise ValueError("factor must be >= 1")
    img = np.asarray(image, dtype=np.float32)
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    if h == 0 or w == 0:
        raise ValueError(f"image {img.shape} is smaller than the factor {factor}")
    return img[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def bicubic_upsample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The baseline every SR method must beat: bicubic interpolation to ``size`` (H, W), clipped to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    y = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)
    return y[0, 0].clamp(0.0, 1.0).numpy()
