"""Input preparation for anomaly maps: a real image -> the canonical input and its global (stage-1) image.

The global image is built exactly as the stage-1 training examples are (through models.geometry),
so the healthy model is asked to reconstruct what it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.geometry import MamboGeometry, area_downsample, to_canvas
from models.imaging.orientation import Orientation
from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig, Preprocessed, preprocess_image


@dataclass(frozen=True)
class Prepared:
    """A real input as the models see it (paper §9) and what is needed to map results back to it.

    ``pre`` is the input through the bundle's preprocessing chain (models/preprocess.py): chest wall
    on the left, background 0, intensities mapped, cropped if the bundle's config crops;
    ``global_image`` is its canvas block-averaged to s x s, exactly as the stage-1 training examples
    are built (training/datasets.py, through models.geometry). ``companions`` went through the same
    mask, flip, crop and intensity window (e.g. an oracle healthy twin).
    """

    pre: Preprocessed
    canvas: int  # L, the square canvas side (a multiple of k*s)
    global_image: np.ndarray  # (s, s) float32 [0, 1]
    global_breast: np.ndarray  # (s, s) bool
    companions_global: tuple[np.ndarray, ...] = ()  # the companions' global images

    @property
    def canonical(self) -> np.ndarray:
        """(H, W) float32 [0, 1]: the preprocessed input."""
        return self.pre.image

    @property
    def breast(self) -> np.ndarray:
        """(H, W) bool: its breast mask."""
        return self.pre.mask

    @property
    def orientation(self) -> Orientation:
        return self.pre.orientation

    @property
    def shape(self) -> tuple[int, int]:
        return self.canonical.shape  # type: ignore[return-value]

    @property
    def global_factor(self) -> int:
        return self.canvas // self.global_image.shape[0]

    def to_input(self, canonical_map: np.ndarray) -> np.ndarray:
        """Undo the chain's geometry: a canonical (H, W) map -> the input's frame (uncropped, flipped back)."""
        return self.pre.to_source(canonical_map)

    def global_to_canonical(self, global_map: np.ndarray) -> np.ndarray:
        """An (s, s) map on the global grid -> (H, W) on the canonical input grid (bilinear, then crop)."""
        t = torch.from_numpy(np.ascontiguousarray(global_map, dtype=np.float32))[None, None]
        up = F.interpolate(t, size=(self.canvas, self.canvas), mode="bilinear", align_corners=False)
        h, w = self.shape
        return up[0, 0, :h, :w].numpy()


def _global(canonical: np.ndarray, canvas: int, factor: int, fill: float) -> np.ndarray:
    """A canonical [0, 1] map on its canvas, block-averaged to the global grid (the training recipe)."""
    on_canvas = to_canvas(torch.from_numpy(np.ascontiguousarray(canonical, dtype=np.float32)), canvas, fill=fill)
    return area_downsample(on_canvas, factor).numpy().astype(np.float32)


def prepare(
    image: np.ndarray,
    geometry: MamboGeometry,
    config: PreprocessConfig = DEFAULT_PREPROCESS,
    *,
    info: Any = None,
    companions: Sequence[np.ndarray] = (),
) -> Prepared:
    """Preprocess an input as training did and build its global (stage-1) image the way training does."""
    pre = preprocess_image(image, info, config, companions)
    h, w = pre.image.shape
    L = geometry.canvas_side(h, w)
    factor = L // geometry.s
    # background is 0 in image range == -1 in model range, so averaging in either range agrees
    return Prepared(
        pre=pre,
        canvas=L,
        global_image=_global(pre.image, L, factor, 0.0),
        global_breast=_global(pre.mask.astype(np.float32), L, factor, 0.0) >= 0.5,
        companions_global=tuple(_global(c, L, factor, 0.0) for c in pre.companions),
    )
