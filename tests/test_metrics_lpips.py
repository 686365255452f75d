"""LPIPS in plain torch: torchvision-format AlexNet state dicts load; the distance behaves like a metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.metrics.features import MetricUnavailableError
from models.metrics.lpips import alexnet_features, load_lpips, packaged_heads_path
from tests.metrics_images import phantom

pytestmark = pytest.mark.skipif(packaged_heads_path() is None, reason="no packaged LPIPS heads (torchmetrics/lpips)")


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A random AlexNet saved exactly as torchvision names it (features.* plus classifier.* keys)."""
    torch.manual_seed(0)
    sd = {f"features.{k}": v for k, v in alexnet_features().state_dict().items()}
    sd["classifier.1.weight"] = torch.zeros(4096, 9216)[:2]  # foreign keys are ignored
    path = tmp_path_factory.mktemp("w") / "alexnet-owt-random.pth"
    torch.save(sd, path)
    return path


def test_torchvision_state_dict_keys_match_our_layer_indices(backbone_file):
    sd = torch.load(backbone_file, weights_only=True)
    ours = {f"features.{k}" for k in alexnet_features().state_dict()}
    assert ours == {k for k in sd if k.startswith("features.")}
    assert ours == {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}


def test_lpips_is_zero_on_identical_images_symmetric_nonnegative_and_grows_with_noise(backbone_file):
    lp = load_lpips(backbone_file)
    rng = np.random.default_rng(0)
    base = phantom(0, (96, 96))
    noisy = [np.clip(base + rng.normal(0, s, base.shape), 0, 1).astype(np.float32) for s in (0.02, 0.08, 0.2)]
    d_same = lp.distances([base], [base])
    d = lp.distances([base] * 3, noisy)
    assert d_same[0] == pytest.approx(0.0, abs=1e-7)
    assert np.all(d >= 0) and d[0] < d[1] < d[2]
    assert lp.distances(noisy, [base] * 3) == pytest.approx(d, rel=1e-5)
    info = lp.describe()
    assert info["backbone_sha256"] and info["heads_sha256"]


def test_without_backbone_weights_lpips_is_unavailable():
    with pytest.raises(MetricUnavailableError, match="LPIPS unavailable"):
        load_lpips(None)


def test_a_file_that_is_not_an_alexnet_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(MetricUnavailableError, match="not an AlexNet"):
        load_lpips(path)
