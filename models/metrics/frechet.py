"""Fréchet distance between Gaussians fitted to feature sets (the "F" of FID).

``scipy.linalg.sqrtm`` of the non-symmetric product Σ1·Σ2 can return complex values and needs an
ad-hoc clean-up. Here the trace term is computed from symmetric eigendecompositions only:
tr sqrt(Σ1 Σ2) = Σ sqrt(eig(√Σ1 Σ2 √Σ1)), and √Σ1 Σ2 √Σ1 is symmetric positive semi-definite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GaussianStats:
    """Mean and (unbiased, n-1) covariance of a feature set; what FID compares."""

    mu: np.ndarray  # (d,)
    sigma: np.ndarray  # (d, d)
    n: int


def gaussian_stats(features: np.ndarray) -> GaussianStats:
    """Fit a Gaussian to ``features`` (n x d), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need an (n >= 2) x d feature matrix, got shape {f.shape}")
    return GaussianStats(mu=f.mean(axis=0), sigma=np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1]), n=f.shape[0])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; tiny negative eigenvalues from round-off are clipped."""
    sym = (matrix + matrix.T) / 2.0
    vals, vecs = np.linalg.eigh(sym)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + tr Σ1 + tr Σ2 - 2 tr sqrt(Σ1 Σ2), via eigendecompositions (never complex)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    root1 = _sqrt_psd(s1)
    inner = root1 @ ((s2 + s2.T) / 2.0) @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(value, 0.0)  # round-off can give -1e-12 for identical sets


def frechet_distance_between(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def fid_from_features(real: np.ndarray, synthetic: np.ndarray) -> float:
    """FID of two feature matrices (n x d and m x d)."""
    return frechet_distance_between(gaussian_stats(real), gaussian_stats(synthetic))
