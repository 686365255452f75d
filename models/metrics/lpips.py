"""LPIPS (Zhang et al. 2018) in plain torch: AlexNet features + the published linear heads.

The ``features`` stack keeps torchvision's layer indices (conv at 0, 3, 6, 8, 10), so a user's
``alexnet-owt-7be5be79.pth`` loads as is, without importing torchvision (which cannot be imported
with this torch). The linear heads ship offline in the ``torchmetrics`` or ``lpips`` wheels; the
ImageNet backbone does not ship in any package, so without a user-given file LPIPS is unavailable.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.metrics.features import MetricUnavailableError, weights_sha256

#: Indices (in ``features``) of the ReLUs whose outputs LPIPS compares: relu1 .. relu5.
ALEXNET_TAPS = (1, 4, 7, 9, 11)
_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features``, layer for layer (same indices, same state-dict keys)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def packaged_heads_path() -> Path | None:
    """LPIPS v0.1 AlexNet linear heads from an installed wheel (torchmetrics or lpips), found without import."""
    candidates = (("torchmetrics", "functional/image/lpips_models/alex.pth"), ("lpips", "weights/v0.1/alex.pth"))
    for package, rel in candidates:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            path = Path(location) / rel
            if path.is_file():
                return path
    return None


class LPIPS(nn.Module):
    """Distance between images in [0, 1] (N x H x W gray, or N x 3 x H x W); 0 for identical images."""

    def __init__(self, features: nn.Sequential, heads: Sequence[torch.Tensor], identity: dict[str, Any]) -> None:
        super().__init__()
        self.features = features.eval()
        for i, h in enumerate(heads):  # 1x1 conv weights, one per tap
            self.register_buffer(f"head{i}", h.reshape(1, -1, 1, 1).float())
        self.n_heads = len(heads)
        self.identity = identity

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in ALEXNET_TAPS:
                out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            if i == ALEXNET_TAPS[-1]:
                break
        return out

    @staticmethod
    def _prepare(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return ((x * 2.0 - 1.0) - _SHIFT.to(x)) / _SCALE.to(x)

    @torch.inference_mode()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self._taps(self._prepare(a.float())), self._taps(self._prepare(b.float()))
        total = torch.zeros(a.shape[0], device=a.device)
        heads = [getattr(self, f"head{i}") for i in range(self.n_heads)]
        for x, y, w in zip(fa, fb, heads, strict=True):
            total = total + F.conv2d((x - y) ** 2, w).mean(dim=(1, 2, 3))
        return total

    def distances(self, a: Sequence[np.ndarray], b: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """LPIPS of each pair (a[i], b[i]) of same-sized 2-D images in [0, 1]."""
        out = []
        for start in range(0, len(a), batch_size):
            ta = torch.from_numpy(np.stack(a[start : start + batch_size]).astype(np.float32))
            tb = torch.from_numpy(np.stack(b[start : start + batch_size]).astype(np.float32))
            out.append(self(ta, tb).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def describe(self) -> dict[str, Any]:
        return dict(self.identity)


def load_heads(path: str | os.PathLike[str]) -> list[torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return [sd[f"lin{i}.model.1.weight"] for i in range(len(ALEXNET_TAPS))]
    except KeyError as exc:
        raise MetricUnavailableError(f"LPIPS unavailable: {path} has no AlexNet linear head {exc}") from exc


def load_lpips(backbone_path: str | os.PathLike[str] | None, heads_path: str | os.PathLike[str] | None = None) -> LPIPS:
    """LPIPS-Alex from a torchvision-format AlexNet state dict and the packaged (or given) linear heads."""
    if backbone_path is None:
        raise MetricUnavailableError(
            "LPIPS unavailable: it needs ImageNet AlexNet weights, which no package ships. Pass the path of "
            "torchvision's alexnet-owt-7be5be79.pth (a state dict with features.N.weight keys)."
        )
    backbone_path = Path(backbone_path)
    if not backbone_path.is_file():
        raise MetricUnavailableError(f"LPIPS unavailable: no AlexNet weights at {backbone_path}")
    heads_file = Path(heads_path) if heads_path is not None else packaged_heads_path()
    if heads_file is None or not heads_file.is_file():
        raise MetricUnavailableError(
            "LPIPS unavailable: no linear heads found (install torchmetrics or lpips, or pass the heads file)"
        )
    try:
        sd = torch.load(backbone_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise MetricUnavailableError(f"LPIPS unavailable: cannot read {backbone_path}: {exc}") from exc
    features = alexnet_features()
    wanted = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    try:
        features.load_state_dict(wanted, strict=True)
    except RuntimeError as exc:
        raise MetricUnavailableError(f"LPIPS unavailable: {backbone_path} is not an AlexNet state dict: {exc}") from exc
    identity = {
        "identity": "LPIPS v0.1, AlexNet backbone (torchvision layout), linear heads",
        "backbone_path": str(backbone_path),
        "backbone_sha256": weights_sha256(backbone_path),
        "heads_path": str(heads_file),
        "heads_sha256": weights_sha256(heads_file),
    }
    return LPIPS(features, load_heads(heads_file), identity)
