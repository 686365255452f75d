"""Small seeded procedural mammogram-like images for the metrics tests (no data downloads).

A semi-elliptical breast against the chest wall on a dark background, filled with power-law
(1/f^beta) texture: enough structure for masks, patches, seams and nearest-neighbour tests.
"""

from __future__ import annotations

import numpy as np


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise with power spectrum ~ 1/f^beta."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.sqrt(fy**2 + fx**2)
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** (beta / 2)
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=shape)
    return (field - field.mean()) / (field.std() + 1e-12)


def phantom(
    seed: int, shape: tuple[int, int] = (192, 160), *, chest_wall: str = "left", beta: float = 3.0
) -> np.ndarray:
    """A float32 image in [0, 1]: breast (textured, brighter) against a black background."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = w * rng.uniform(0.6, 0.8)
    half = h * rng.uniform(0.38, 0.46)
    cy = h / 2 + rng.uniform(-0.04, 0.04) * h
    r = np.sqrt((xx / depth) ** 2 + ((yy - cy) / half) ** 2)
    inside = r < 1.0
    thickness = np.sqrt(np.clip(1 - r**2, 0, 1))
    texture = power_law_noise(rng, shape, beta)
    img = np.where(inside, 0.35 + 0.3 * thickness + 0.08 * texture * thickness, 0.0)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return img if chest_wall == "left" else img[:, ::-1].copy()


def phantom_set(seeds: range | list[int], shape: tuple[int, int] = (192, 160), beta: float = 3.0) -> list[np.ndarray]:
    return [phantom(s, shape, beta=beta) for s in seeds]
