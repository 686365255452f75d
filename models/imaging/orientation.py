"""Which side the chest wall is on, the flip to the canonical side (chest wall LEFT), and back.

Models are trained and run on breasts whose chest wall is on the left (paper §8-9; the geometry pads
on the right). Inputs come either way: standard display puts a left breast's chest wall on the left
and a right breast's on the right, but exports differ. The side is decided, most explicit first:

1. ``PatientOrientation`` row direction (``A``: rows run anterior, chest wall left; ``P``: right);
2. the image itself, when it is clear: the breast mask touches one vertical edge and not the other,
   or its mass lies clearly on one side;
3. the laterality tag with the standard display convention (L: left, R: right);
4. left (nothing to go on: leave the image as it is).

``restore`` undoes ``canonicalize`` so outputs go back in the input's orientation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from models.imaging.mask import breast_mask

Side = Literal["left", "right"]
Source = Literal["patient_orientation", "content", "laterality", "default"]

#: How lopsided the mask must be before the content decides (fraction of its pixels in one half).
CONTENT_MARGIN = 0.6


@dataclass(frozen=True)
class Orientation:
    """What canonicalize did: ``flipped`` is True when the input's chest wall was on the right."""

    chest_wall: Side  # in the input image
    source: Source
    laterality: Literal["L", "R"] | None = None

    @property
    def flipped(self) -> bool:
        return self.chest_wall == "right"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flipped": self.flipped}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Orientation:
        return cls(chest_wall=d["chest_wall"], source=d.get("source", "default"), laterality=d.get("laterality"))


def side_from_content(image: np.ndarray, mask: np.ndarray | None = None) -> Side | None:
    """The chest-wall side read off the breast mask, or None when the image does not say clearly."""
    m = breast_mask(image) if mask is None else np.asarray(mask, bool)
    if m.ndim != 2 or not m.any():
        return None
    left_edge, right_edge = int(m[:, 0].sum()), int(m[:, -1].sum())
    min_edge = max(2, m.shape[0] // 20)  # the chest wall is a long contact, not a corner touch
    if left_edge >= min_edge and right_edge < min_edge // 2:
        return "left"
    if right_edge >= min_edge and left_edge < min_edge // 2:
        return "right"
    w = m.shape[1]
    cols = m.sum(axis=0).astype(np.float64)
    left_share = cols[: w // 2].sum() / max(cols.sum(), 1.0)
    if left_share >= CONTENT_MARGIN:
        return "left"
    if left_share <= 1.0 - CONTENT_MARGIN:
        return "right"
    return None


def side_from_tags(info: Any) -> tuple[Side | None, Source | None]:
    """Chest-wall side from DICOM tags (an ImageInfo with ``.dataset`` or a pydicom Dataset)."""
    ds = getattr(info, "dataset", info)
    orientation = ds.get("PatientOrientation") if ds is not None and hasattr(ds, "get") else None
    if orientation is not None and not isinstance(orientation, str) and len(orientation) >= 1:
        row = str(orientation[0]).upper()
        if row.startswith("A"):
            return "left", "patient_orientation"
        if row.startswith("P"):
            return "right", "patient_orientation"
    return None, None


def _laterality(info: Any) -> Literal["L", "R"] | None:
    lat = getattr(info, "laterality", None)
    if lat is None and info is not None and hasattr(info, "get"):
        lat = str(info.get("ImageLaterality", "") or info.get("Laterality", "") or "").upper() or None
    return lat if lat in ("L", "R") else None


def detect_orientation(image: np.ndarray, info: Any = None, mask: np.ndarray | None = None) -> Orientation:
    """Decide the chest-wall side of ``image`` (rules in the module docstring)."""
    laterality = _laterality(info)
    side, source = side_from_tags(info) if info is not None else (None, None)
    if side is not None and source is not None:
        return Orientation(side, source, laterality)
    side = side_from_content(image, mask)
    if side is not None:
        return Orientation(side, "content", laterality or ("L" if side == "left" else "R"))
    if laterality is not None:
        return Orientation("left" if laterality == "L" else "right", "laterality", laterality)
    return Orientation("left", "default", None)


def flip(image: np.ndarray) -> np.ndarray:
    """Mirror left-right (H x W or H x W x C)."""
    return np.ascontiguousarray(np.flip(np.asarray(image), axis=1))


def canonicalize(image: np.ndarray, info: Any = None, mask: np.ndarray | None = None) -> tuple[np.ndarray, Orientation]:
    """The image with its chest wall on the LEFT, and how to undo that."""
    orientation = detect_orientation(image, info, mask)
    return (flip(image) if orientation.flipped else np.asarray(image)), orientation


def restore(image: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Undo ``canonicalize``: put an output (same width) back in the input's orientation."""
    return flip(image) if orientation.flipped else np.asarray(image)
