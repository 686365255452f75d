"""Is a generated global image one breast against the chest wall on a black background?

The first thing a person looks for in a synthetic mammogram, made a number so a gate can count it:
one main foreground component (anything else is specks), touching the chest-wall side (the left,
canonical), with an area inside the range real images of this kind have, and a background that is
black (most pixels outside the breast below a low fraction of full scale), not grey residual noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

#: Pixels at or above this fraction of full scale are foreground; below it, black background.
FOREGROUND_LEVEL = 0.1
#: At least this fraction of the pixels outside the breast must be black.
BLACK_BACKGROUND = 0.95
#: Other components must each be smaller than this fraction of the main one.
SPECK_FRACTION = 0.05
#: The main component must reach the chest-wall column over at least this fraction of the rows.
CHEST_WALL_ROWS = 0.2


@dataclass(frozen=True)
class Silhouette:
    area_fraction: float  # main component (holes filled) / image area
    components: int  # foreground components larger than a speck
    chest_wall_rows: float  # fraction of rows where the main component touches column 0
    black_background: float  # fraction of pixels outside the (dilated) breast below FOREGROUND_LEVEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def silhouette(image: np.ndarray, level: float = FOREGROUND_LEVEL) -> Silhouette:
    """The silhouette figures of one [0, 1] image, chest wall on the left."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"silhouette expects a 2-D image, got shape {img.shape}")
    fg = img >= level
    labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    if n == 0:
        return Silhouette(0.0, 0, 0.0, 1.0)
    sizes = np.bincount(labels.ravel())[1:]
    main_label = int(np.argmax(sizes)) + 1
    main = ndimage.binary_fill_holes(labels == main_label)
    components = int((sizes >= SPECK_FRACTION * sizes.max()).sum())
    outside = ~ndimage.binary_dilation(main, iterations=2)
    black = float((img[outside] < level).mean()) if outside.any() else 1.0
    return Silhouette(
        area_fraction=float(main.mean()),
        components=components,
        chest_wall_rows=float(main[:, 0].mean()),
        black_background=black,
    )


@dataclass(frozen=True)
class SilhouetteRule:
    """The pass rule, with the area range taken from reference images (e.g. the 5th-95th percentile)."""

    area_range: tuple[float, float]

    @classmethod
    def from_references(cls, references: Sequence[np.ndarray], percentiles: tuple[float, float] = (5, 95)) -> Any:
        areas = [silhouette(r).area_fraction for r in references]
        lo, hi = np.percentile(areas, percentiles)
        return cls((float(lo), float(hi)))

    def failures(self, s: Silhouette) -> list[str]:
        """Why ``s`` is not one breast against the chest wall on black (empty: it is)."""
        out = []
        if s.components != 1:
            out.append(f"{s.components} components")
        if not self.area_range[0] <= s.area_fraction <= self.area_range[1]:
            out.append(f"area {s.area_fraction:.3f} outside [{self.area_range[0]:.3f}, {self.area_range[1]:.3f}]")
        if s.chest_wall_rows < CHEST_WALL_ROWS:
            out.append(f"touches the chest wall on {s.chest_wall_rows:.0%} of rows")
        if s.black_background < BLACK_BACKGROUND:
            out.append(f"background {s.black_background:.1%} black")
        return out
