"""FID and KID maths: analytic Gaussians, invariances, unbiasedness, and agreement with torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from models.metrics.frechet import fid_from_features, frechet_distance, gaussian_stats
from models.metrics.kid import kernel_inception_distance, mmd2_unbiased


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_1d_gaussians_is_mean_and_std_gap():
    # W2² of N(m1, s1²) and N(m2, s2²) is (m1 - m2)² + (s1 - s2)².
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[0.25]])) == pytest.approx(
        9.0 + 1.5**2
    )


def test_frechet_distance_of_noncommuting_2x2_gaussians_matches_closed_form():
    # For 2x2 PSD M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); with M = Σ1Σ2 (same eigenvalues as √Σ1Σ2√Σ1).
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
    mu1, mu2 = np.array([0.3, -1.0]), np.array([1.0, 2.0])
    prod = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(prod) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_formula_in_64_dims():
    rng = np.random.default_rng(0)
    s1, s2 = _random_spd(rng, 64), _random_spd(rng, 64)
    mu1, mu2 = rng.normal(size=64), rng.normal(size=64)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_samples_converges_to_the_analytic_gaussian_distance():
    rng = np.random.default_rng(1)
    d = 4
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    a = rng.multivariate_normal(mu1, s1, size=40_000)
    b = rng.multivariate_normal(mu2, s2, size=40_000)
    assert fid_from_features(a, b) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), abs=0.02)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric_and_order_free():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 32))
    b = rng.normal(loc=0.2, size=(250, 32)) * 1.3
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(a, b) == pytest.approx(fid_from_features(b, a), rel=1e-10)
    assert fid_from_features(a[rng.permutation(300)], b) == pytest.approx(fid_from_features(a, b), rel=1e-10)
    assert fid_from_features(a, b) > 1.0


def test_fid_handles_rank_deficient_covariance_without_complex_values():
    # n < d, as with small evaluation sets and 2048-d Inception features: FID must stay real and finite.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 100)), rng.normal(size=(20, 100))
    value = fid_from_features(a, b)
    assert np.isfinite(value) and value > 0
    assert gaussian_stats(a).sigma.shape == (100, 100)


def test_fid_with_fewer_samples_than_dims_uses_the_exact_cross_gram_formula():
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(30, 200)), rng.normal(0.1, 1.2, size=(40, 200))
    sa, sb = gaussian_stats(a), gaussian_stats(b)
    assert fid_from_features(a, b) == pytest.approx(frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma), rel=1e-7)


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    # The U-statistic averages to zero (individual draws go negative); the biased V-statistic would not.
    rng = np.random.default_rng(4)
    values = np.array([mmd2_unbiased(rng.normal(size=(20, 8)), rng.normal(size=(20, 8))) for _ in range(400)])
    sem = values.std() / np.sqrt(values.size)
    assert abs(values.mean()) < 3 * sem
    assert (values < 0).any()
    shifted = [mmd2_unbiased(rng.normal(size=(20, 8)), rng.normal(0.5, 1.0, size=(20, 8))) for _ in range(50)]
    assert np.mean(shifted) > 10 * sem


def test_kid_is_positive_for_a_shift_and_reports_std_over_subsets():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(200, 16))
    same = kernel_inception_distance(a, rng.normal(size=(200, 16)), subsets=20, subset_size=50)
    shifted = kernel_inception_distance(a, rng.normal(0.5, 1.0, size=(200, 16)), subsets=20, subset_size=50)
    assert abs(same.mean) < 3 * same.std
    assert shifted.mean > 3 * shifted.std > 0
    assert shifted.mean > 10 * abs(same.mean)
    assert shifted.subsets == 20 and shifted.subset_size == 50


def test_kid_of_small_sets_is_the_whole_set_mmd_with_a_nonzero_std_from_half_subsets():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(30, 4)), rng.normal(0.3, 1.0, size=(12, 4))
    result = kernel_inception_distance(a, b, subsets=10)
    assert result.mean == pytest.approx(mmd2_unbiased(a, b))
    assert result.subset_size == 6 and result.std > 0 and "whole sets" in result.method


class _Identity(torch.nn.Module):
    """A "feature extractor" that passes features through, so torchmetrics and we see the same vectors."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fid_agrees_with_torchmetrics_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(7)
    a = rng.normal(size=(120, 24))
    b = rng.normal(loc=0.1, size=(100, 24)) @ rng.normal(size=(24, 24)) * 0.5
    metric = FrechetInceptionDistance(feature=_Identity(), input_img_size=(24,))
    metric.set_dtype(torch.float64)
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    assert fid_from_features(a, b) == pytest.approx(float(metric.compute()), rel=1e-6)


def test_kid_agrees_with_torchmetrics_on_the_same_features():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(8)
    a = rng.normal(size=(60, 24))
    b = rng.normal(loc=0.2, size=(60, 24))
    # One subset of the full size: both sides compute the unbiased MMD² of the whole sets.
    with pytest.warns(UserWarning, match="buffer"):
        metric = KernelInceptionDistance(feature=_Identity(), subsets=1, subset_size=60)
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    tm_mean, _ = metric.compute()
    ours = kernel_inception_distance(a, b, subsets=1, subset_size=60)
    assert ours.mean == pytest.approx(float(tm_mean), rel=1e-6)


def test_kid_subset_mean_and_std_agree_with_torchmetrics_in_distribution():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(120, 16)), rng.normal(loc=0.3, size=(120, 16))
    with pytest.warns(UserWarning, match="buffer"):
        metric = KernelInceptionDistance(feature=_Identity(), subsets=100, subset_size=40)
    torch.manual_seed(0)  # torchmetrics draws its subsets from the global generator
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    tm_mean, tm_std = (float(v) for v in metric.compute())
    ours = kernel_inception_distance(a, b, subsets=100, subset_size=40)
    # Different random subsets: the means agree within a few standard errors, the stds within 25%.
    assert ours.mean == pytest.approx(tm_mean, abs=4 * tm_std / np.sqrt(100))
    assert ours.std == pytest.approx(tm_std, rel=0.25)
