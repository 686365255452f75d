"""Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel, averaged over subsets.

KID is the better choice for small sets (InBreast-sized): its estimator is unbiased at any n,
whereas FID is biased upwards when n is far below the feature dimension (2048).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class KIDResult:
    mean: float
    std: float  # over subsets (population std, as torchmetrics and the KID authors report it)
    subsets: int
    subset_size: int  # of the subsets the std comes from
    method: str

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0) -> np.ndarray:
    """k(x, y) = (xᵀy / d + coef) ** degree, the kernel of the KID paper."""
    return (x @ y.T / x.shape[1] + coef) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3) -> float:
    """Unbiased MMD² (U-statistic): within-set sums exclude the diagonal, so E[value] = 0 when x ~ y."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("unbiased MMD² needs at least 2 samples per set")
    k_xx = polynomial_kernel(x, x, degree)
    k_yy = polynomial_kernel(y, y, degree)
    k_xy = polynomial_kernel(x, y, degree)
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def kernel_inception_distance(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KIDResult:
    """Mean and std of unbiased MMD² over random subsets (without replacement within a subset).

    When both sets fit in one subset (small sets: ``subset_size`` >= the smaller set), every subset
    would be the whole set and the std would be 0: the mean is then the exact unbiased MMD² of the
    whole sets and the std comes from subsets of half the smaller set (conservative: the spread
    at n/2 is larger than at n).
    """
    real, synthetic = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    n = min(real.shape[0], synthetic.shape[0])
    if n < 2:
        raise ValueError("KID needs at least 2 samples per set")
    rng = np.random.default_rng(seed)

    def spread(size: int) -> np.ndarray:
        values = np.empty(subsets)
        for i in range(subsets):
            a = real[rng.permutation(real.shape[0])[:size]]
            b = synthetic[rng.permutation(synthetic.shape[0])[:size]]
            values[i] = mmd2_unbiased(a, b)
        return values

    if subset_size < n:
        values = spread(subset_size)
        return KIDResult(float(values.mean()), float(values.std()), subsets, subset_size, "subsets")
    mean = mmd2_unbiased(real, synthetic)
    half = max(2, n // 2)
    std = float(spread(half).std()) if half < n else 0.0
    return KIDResult(mean, std, subsets, half, "whole sets; std over half-size subsets")
