"""The paper's preprocessing (MAMBO §8-9) as separate, individually tested steps.

    read (MONOCHROME1 inverted, modality + VOI LUT)  ->  undo_inversion (white-background "negatives")
    -> segment (blur, Otsu x 0.175, largest blob, filled)  ->  zero_background
    -> face_left (chest wall on the left)  ->  normalize (the bundle's IntensityMapping)
    -> crop_to_breast (optional)  ->  [pad: models.geometry.to_canvas, done by the stage datasets]

``preprocess_image`` runs the chain on a decoded image, ``preprocess_file`` on any DICOM/PNG/TIFF.
The configuration is a frozen dataclass whose ``to_dict`` goes into the cache key and the bundle
manifest, so a bundle records exactly how its training images were prepared.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.errors import BadInputError
from models.imaging.mask import OTSU_FACTOR, breast_mask
from models.imaging.orientation import Orientation, canonicalize
from models.imaging.readers import ImageInfo, read_image
from models.intensity import DEFAULT_INTENSITY, IntensityMapping

PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    intensity: IntensityMapping = DEFAULT_INTENSITY
    otsu_factor: float = OTSU_FACTOR
    erode_px: int = 0
    fix_inverted: bool = True
    crop_to_breast: bool = False
    crop_margin_px: int = 0
    apply_voi: bool = True  # DICOM VOI LUT / window when reading
    min_breast_fraction: float = 0.01  # smaller masks: refuse the image rather than train on nothing
    version: int = PREPROCESS_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["intensity"] = self.intensity.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "intensity"}
        if fields.get("version", PREPROCESS_VERSION) != PREPROCESS_VERSION:
            raise ValueError(f"unknown preprocessing version {fields['version']}")
        return cls(intensity=IntensityMapping.from_dict(d.get("intensity", {})), **fields)

    def key(self) -> str:
        """Short stable hash of the configuration (cache keys)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


DEFAULT_PREPROCESS = PreprocessConfig()


@dataclass(frozen=True)
class Preprocessed:
    """A training-ready view: float32 [0, 1], chest wall on the left, background exactly 0."""

    image: np.ndarray
    mask: np.ndarray
    orientation: Orientation
    inverted: bool
    crop_box: tuple[int, int, int, int] | None  # (y, x, h, w) in the canonical (flipped) input
    source_shape: tuple[int, int]
    info: ImageInfo | None = field(default=None, repr=False, compare=False)

    def meta(self) -> dict[str, Any]:
        """JSON-able description (cache sidecars, dataset metadata)."""
        info = self.info.to_row() if self.info is not None else {}
        return {
            **{
                k: info.get(k)
                for k in (
                    "format",
                    "laterality",
                    "view",
                    "patient_id",
                    "study_uid",
                    "series_uid",
                    "sop_uid",
                    "bits",
                    "photometric",
                )
            },
            "laterality": self.orientation.laterality or info.get("laterality"),
            "orientation": self.orientation.to_dict(),
            "inverted": self.inverted,
            "crop_box": list(self.crop_box) if self.crop_box else None,
            "source_shape": list(self.source_shape),
        }


# ---- the steps ---------------------------------------------------------------------------------
def is_inverted(image: np.ndarray, bins: int = 64) -> bool:
    """A "negative" (white background) image: its most common intensity, the background, is bright.

    Background covers a large share of every mammogram, so the histogram mode is background; in a
    normal image it is dark. (DICOM MONOCHROME1 is already inverted by the reader.)
    """
    hist, edges = np.histogram(np.asarray(image, np.float32), bins=bins, range=(0.0, 1.0))
    mode = int(np.argmax(hist))
    return (edges[mode] + edges[mode + 1]) / 2.0 > 0.5


def undo_inversion(image: np.ndarray) -> tuple[np.ndarray, bool]:
    if is_inverted(image):
        return (1.0 - np.asarray(image, np.float32)).astype(np.float32), True
    return np.asarray(image, np.float32), False


def segment(image: np.ndarray, config: PreprocessConfig = DEFAULT_PREPROCESS) -> np.ndarray:
    """The breast mask (paper §9) through the one shared implementation."""
    return breast_mask(image, otsu_factor=config.otsu_factor, erode_px=config.erode_px)


def zero_background(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, image, 0.0).astype(np.float32)


def face_left(
    image: np.ndarray, mask: np.ndarray, info: ImageInfo | None = None
) -> tuple[np.ndarray, np.ndarray, Orientation]:
    """Flip image and mask together so the chest wall is on the left."""
    canon, orientation = canonicalize(image, info, mask)
    return canon, (mask[:, ::-1].copy() if orientation.flipped else mask), orientation


def normalize(image: np.ndarray, mask: np.ndarray, config: PreprocessConfig = DEFAULT_PREPROCESS) -> np.ndarray:
    """The bundle's intensity mapping, computed over the breast; background stays 0.

    ``raw_window="bits"`` keeps the reader's scaling (stored range or VOI window -> [0, 1]) as is.
    """
    if config.intensity.raw_window == "bits":
        return zero_background(np.clip(image, 0.0, 1.0), mask)
    return config.intensity.normalize_raw(image, mask=mask)


def breast_box(mask: np.ndarray, margin: int = 0) -> tuple[int, int, int, int]:
    """(y, x, h, w) bounding box of the mask, grown by ``margin`` and clipped to the image."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0, 0, mask.shape[0], mask.shape[1]
    y0, y1 = max(0, ys.min() - margin), min(mask.shape[0], ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(mask.shape[1], xs.max() + 1 + margin)
    return int(y0), int(x0), int(y1 - y0), int(x1 - x0)


def crop_to_breast(
    image: np.ndarray, mask: np.ndarray, margin: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    y, x, h, w = breast_box(mask, margin)
    return image[y : y + h, x : x + w].copy(), mask[y : y + h, x : x + w].copy(), (y, x, h, w)


# ---- the chain ---------------------------------------------------------------------------------
def preprocess_image(
    image: np.ndarray, info: ImageInfo | None = None, config: PreprocessConfig = DEFAULT_PREPROCESS
) -> Preprocessed:
    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise ValueError(f"preprocess_image expects a 2-D image, got shape {img.shape}")
    inverted = False
    if config.fix_inverted:
        img, inverted = undo_inversion(img)
    mask = segment(img, config)
    if mask.mean() < config.min_breast_fraction:
        raise BadInputError(
            f"no breast found: the mask covers {100 * mask.mean():.2f}% of the image "
            f"(< {100 * config.min_breast_fraction:g}%); blank, cropped or not a mammogram"
        )
    img = zero_background(img, mask)
    img, mask, orientation = face_left(img, mask, info)
    img = normalize(img, mask, config)
    box = None
    if config.crop_to_breast:
        img, mask, box = crop_to_breast(img, mask, config.crop_margin_px)
    return Preprocessed(
        image=np.ascontiguousarray(img, np.float32),
        mask=np.ascontiguousarray(mask, bool),
        orientation=orientation,
        inverted=inverted,
        crop_box=box,
        source_shape=(int(image.shape[0]), int(image.shape[1])),
        info=info,
    )


def preprocess_file(
    path: str | os.PathLike[str], config: PreprocessConfig = DEFAULT_PREPROCESS, **read_kwargs: Any
) -> Preprocessed:
    image, info = read_image(path, apply_voi=config.apply_voi, **read_kwargs)
    return preprocess_image(image, info, config)


def to_model_canvas(pre: Preprocessed, side: int) -> Any:
    """Padding hook: the preprocessed image in model range on a side x side canvas (background -1),
    through ``models.geometry.to_canvas`` (pads right/bottom, opposite the chest wall)."""
    import torch

    from models.geometry import to_canvas

    x = torch.from_numpy(np.asarray(DEFAULT_INTENSITY.to_model(pre.image), np.float32))
    return to_canvas(x, side)
