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
    """FID of two feature matrices (n x d and m x d).

    With fewer samples than dimensions (the usual case: hundreds of images, 2048 Inception
    features) the trace term is computed exactly from the n x m cross-Gram matrix instead of
    d x d eigendecompositions: with Σ1 = X1ᵀX1/(n-1), Σ2 = X2ᵀX2/(m-1) (centred X),
    tr sqrt(Σ1Σ2) = Σ singular values of X1 X2ᵀ / sqrt((n-1)(m-1)).
    """
    x1, x2 = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1] or min(len(x1), len(x2)) < 2:
        raise ValueError(f"need two (n >= 2) x d feature matrices, got {x1.shape} and {x2.shape}")
    if min(len(x1), len(x2)) >= x1.shape[1]:
        return frechet_distance_between(gaussian_stats(x1), gaussian_stats(x2))
    return _fid_low_rank(x1, x2)


def _fid_low_rank(x1: np.ndarray, x2: np.ndarray) -> float:
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    c1, c2 = x1 - mu1, x2 - mu2
    a, b = len(x1) - 1, len(x2) - 1
    trace_sqrt = float(np.linalg.svd(c1 @ c2.T, compute_uv=False).sum()) / np.sqrt(a * b)
    tr1, tr2 = float((c1**2).sum()) / a, float((c2**2).sum()) / b
    diff = mu1 - mu2
    return max(float(diff @ diff) + tr1 + tr2 - 2.0 * trace_sqrt, 0.0)
