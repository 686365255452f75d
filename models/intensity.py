"""The one intensity mapping: raw detector values -> image range [0, 1] -> model range [-1, 1].

Every bundle manifest records the mapping it was trained with (``to_dict``), and every reader,
dataset, pipeline and writer goes through this module, so training and serving cannot disagree.
Background (outside the breast) is 0 in image range and -1 in model range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

RawWindow = Literal["minmax", "percentile", "bits"]
#: Background in model range (padding, skipped tiles, everything outside the breast): 0 in image range.
BACKGROUND = -1.0


@dataclass(frozen=True)
class IntensityMapping:
    """How raw pixels become model inputs, and back.

    raw_window: ``minmax`` (the paper: min-max to [0, 1]), ``percentile`` (clip at lo/hi
    percentiles of the breast region first: robust to burned-in labels and hot pixels), or
    ``bits`` (keep the reader's scaling by the stored bit depth, 2**bits_stored - 1 -> 1: absolute
    intensities across images; the readers do that division, nobody else).
    """

    raw_window: RawWindow = "minmax"
    lo_percentile: float = 0.5
    hi_percentile: float = 99.5
    version: int = 1

    # raw -> image range ---------------------------------------------------------------
    def normalize_raw(self, raw: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Map decoded pixel values (already MONOCHROME2) to float32 in [0, 1]; 0 outside ``mask``."""
        arr = np.asarray(raw, dtype=np.float32)
        if self.raw_window == "bits":
            out = np.clip(arr, 0.0, 1.0)
            return out if mask is None else np.where(mask, out, 0.0).astype(np.float32)
        region = arr[mask] if mask is not None and mask.any() else arr
        if self.raw_window == "percentile":
            lo, hi = np.percentile(region, [self.lo_percentile, self.hi_percentile])
        else:
            lo, hi = float(region.min()), float(region.max())
        if hi <= lo:
            return np.zeros_like(arr, dtype=np.float32)
        out = np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        if mask is not None:
            out[~mask] = 0.0
        return out

    # image range <-> model range ------------------------------------------------------
    @staticmethod
    def to_model(image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """[0, 1] -> [-1, 1]."""
        return image * 2.0 - 1.0

    @staticmethod
    def from_model(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """[-1, 1] -> [0, 1], clipped (samplers may overshoot slightly)."""
        y = (x + 1.0) / 2.0
        return y.clamp(0.0, 1.0) if isinstance(y, torch.Tensor) else np.clip(y, 0.0, 1.0)

    # a change of the image (a lesion layer: lesion minus its healthy twin) <-> model range ----------
    @staticmethod
    def residual_to_model(change: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Image-range difference -> model range, amplified by RESIDUAL_GAIN so faint masses (0.05) are not
        lost in the noise while bright calcifications (0.35) stay inside the clipped [-1, 1]."""
        return change * (2.0 * RESIDUAL_GAIN)

    @staticmethod
    def residual_from_model(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        return x / (2.0 * RESIDUAL_GAIN)

    def to_dict(self) -> dict[str, Any]:
        return {"image_range": [0.0, 1.0], "model_range": [-1.0, 1.0], **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityMapping:
        fields = {k: d[k] for k in ("raw_window", "lo_percentile", "hi_percentile", "version") if k in d}
        if fields.get("version", 1) != 1:
            raise ValueError(f"unknown intensity mapping version {fields['version']}")
        return cls(**fields)


DEFAULT_INTENSITY = IntensityMapping()
#: Amplification of lesion layers in model range (see ``IntensityMapping.residual_to_model``).
RESIDUAL_GAIN = 1.4


def to_uint16(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> full-range uint16 (the 16-bit PNG and DICOM pixel representation)."""
    return np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)


def from_uint16(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / 65535.0
