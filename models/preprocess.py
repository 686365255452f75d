"""The one preprocessing chain (MAMBO §8-9): training and serving prepare a mammogram with the same code.

    read (MONOCHROME1 inverted, modality + VOI LUT, scaled by the stored bits: models.imaging.readers)
    -> validate_image (2-D, finite, not empty)  ->  is_inverted: 1 - x (white-background "negatives")
    -> segment (blur, Otsu x factor, largest blob, filled)  ->  refuse masks under min_breast_fraction
    -> zero_background  ->  face_left (chest wall on the left)  ->  normalize (the IntensityMapping)
    -> crop_to_breast (optional)  ->  [pad: models.geometry.to_canvas, by the stage datasets and pipelines]

Training caches ``preprocess_file`` (training/cache.py); super-resolution and anomaly maps run
``preprocess_image`` on the decoded upload with the ``PreprocessConfig`` recorded in the bundle
manifest, and map their outputs back to the input's frame with ``Preprocessed.to_source``.

The chain also decides what is an image: a label mask (``<stem>_mask.png`` beside ``<stem>.*``) is a
label of that image, never a mammogram (``is_label_mask``, ``label_mask_target``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import BadInputError
from models.imaging.mask import OTSU_FACTOR, breast_mask
from models.imaging.orientation import Orientation, canonicalize, flip, restore
from models.imaging.readers import ImageInfo, read_image
from models.intensity import DEFAULT_INTENSITY, IntensityMapping

PREPROCESS_VERSION = 1
#: ``<stem>_mask.<ext>`` next to ``<stem>.<ext>`` is that image's label mask.
LABEL_MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class PreprocessConfig:
    """How a mammogram becomes a model input; recorded in every bundle manifest (``to_dict``)."""

    intensity: IntensityMapping = DEFAULT_INTENSITY
    otsu_factor: float = OTSU_FACTOR
    erode_px: int = 0
    fix_inverted: bool = True
    crop_to_breast: bool = False
    crop_margin_px: int = 0
    apply_voi: bool = True  # DICOM VOI LUT / window when reading
    min_breast_fraction: float = 0.01  # smaller masks: refuse the image rather than train on (or score) nothing
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

Box = tuple[int, int, int, int]  # (y, x, h, w)


@dataclass(frozen=True)
class Preprocessed:
    """A model-ready view: float32 [0, 1], chest wall on the left, background exactly 0, and the way back.

    ``companions`` (same size as the input, e.g. an oracle healthy twin) went through the input's
    inversion, mask, flip, crop and intensity window.
    """

    image: np.ndarray
    mask: np.ndarray
    orientation: Orientation
    inverted: bool
    crop_box: Box | None  # in the canonical (flipped) input
    source_shape: tuple[int, int]
    info: ImageInfo | None = field(default=None, repr=False, compare=False)
    companions: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)

    def meta(self) -> dict[str, Any]:
        """JSON-able description (cache sidecars, dataset metadata)."""
        info = self.info.to_row() if self.info is not None else {}
        keys = ("format", "view", "patient_id", "study_uid", "series_uid", "sop_uid", "bits", "photometric")
        return {
            **{k: info.get(k) for k in keys},
            "laterality": self.orientation.laterality or info.get("laterality"),
            "orientation": self.orientation.to_dict(),
            "inverted": self.inverted,
            "crop_box": list(self.crop_box) if self.crop_box else None,
            "source_shape": list(self.source_shape),
        }

    def box_at(self, shape: tuple[int, int] | None = None) -> Box:
        """The canonical region (y, x, h, w) on a grid of ``shape`` covering the input (default: its own size)."""
        hs, ws = self.source_shape
        H, W = shape or self.source_shape
        y, x, h, w = self.crop_box or (0, 0, hs, ws)
        y0, y1 = round(y * H / hs), round((y + h) * H / hs)
        x0, x1 = round(x * W / ws), round((x + w) * W / ws)
        return y0, x0, y1 - y0, x1 - x0

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Apply the chain's geometry (flip, crop) to another array of the input's size (no intensity step)."""
        a = np.asarray(array)
        if a.shape[:2] != self.source_shape:
            raise ValueError(f"expected an array of the input's size {self.source_shape}, got {a.shape[:2]}")
        a = flip(a) if self.orientation.flipped else a
        y, x, h, w = self.box_at()
        return np.ascontiguousarray(a[y : y + h, x : x + w])

    def to_source(self, canonical_map: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Undo the geometry: a map of the canonical region -> the input's frame (uncropped, flipped back).

        ``shape``: the input's frame at another resolution (super-resolution); the crop box scales with it.
        Outside the crop box the result is 0 (background).
        """
        m = np.asarray(canonical_map)
        H, W = shape or self.source_shape
        y, x, h, w = self.box_at((H, W))
        if m.shape[:2] != (h, w):
            raise ValueError(f"expected a canonical map of {h}x{w}, got {m.shape[:2]}")
        out = np.zeros((H, W, *m.shape[2:]), dtype=m.dtype)
        out[y : y + h, x : x + w] = m
        return np.ascontiguousarray(restore(out, self.orientation))


# ---- the steps ---------------------------------------------------------------------------------
def validate_image(image: np.ndarray) -> np.ndarray:
    """The checks every entry point runs first: a finite, non-empty 2-D grayscale image (as float32)."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise BadInputError(f"expected a 2-D grayscale image, got an array of shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 2:
        raise BadInputError(f"the image is empty ({'x'.join(str(n) for n in arr.shape)} pixels)")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise BadInputError("the image contains NaN or infinite values")
    return arr


def is_inverted(image: np.ndarray, bins: int = 64) -> bool:
    """A "negative" (white background) image: its most common intensity, the background, is bright.

    Background covers a large share of every mammogram, so the histogram mode is background; in a
    normal image it is dark. (DICOM MONOCHROME1 is already inverted by the reader.)
    """
    hist, edges = np.histogram(np.asarray(image, np.float32), bins=bins, range=(0.0, 1.0))
    mode = int(np.argmax(hist))
    return (edges[mode] + edges[mode + 1]) / 2.0 > 0.5


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
    return canon, (flip(mask) if orientation.flipped else mask), orientation


def normalize(image: np.ndarray, mask: np.ndarray, config: PreprocessConfig = DEFAULT_PREPROCESS) -> np.ndarray:
    """The bundle's intensity mapping, computed over the breast; background stays 0."""
    return config.intensity.normalize_raw(image, mask=np.asarray(mask, bool))


def breast_box(mask: np.ndarray, margin: int = 0) -> Box:
    """(y, x, h, w) bounding box of the mask, grown by ``margin`` and clipped to the image."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0, 0, mask.shape[0], mask.shape[1]
    y0, y1 = max(0, ys.min() - margin), min(mask.shape[0], ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(mask.shape[1], xs.max() + 1 + margin)
    return int(y0), int(x0), int(y1 - y0), int(x1 - x0)


def crop_to_breast(image: np.ndarray, mask: np.ndarray, margin: int = 0) -> tuple[np.ndarray, np.ndarray, Box]:
    y, x, h, w = breast_box(mask, margin)
    return image[y : y + h, x : x + w].copy(), mask[y : y + h, x : x + w].copy(), (y, x, h, w)


# ---- the chain ---------------------------------------------------------------------------------
def preprocess_image(
    image: np.ndarray,
    info: ImageInfo | Any = None,
    config: PreprocessConfig = DEFAULT_PREPROCESS,
    companions: Sequence[np.ndarray] = (),
) -> Preprocessed:
    """The chain on a decoded [0, 1] image; BadInputError when it is unusable or holds no breast.

    ``info`` (an ImageInfo or a DICOM dataset) lets PatientOrientation / laterality decide the flip.
    Companions follow the input's decisions; the intensity window is taken over all of their breast
    pixels together (for ``minmax`` the input's own when companions are no brighter).
    """
    img = validate_image(image)
    comps = [validate_image(c) for c in companions]
    if any(c.shape != img.shape for c in comps):
        raise BadInputError("companion images must have the input's size")
    inverted = bool(config.fix_inverted and is_inverted(img))
    stack = [1.0 - a if inverted else a for a in (img, *comps)]
    mask = segment(stack[0], config)
    if mask.mean() < config.min_breast_fraction:
        raise BadInputError(
            f"no breast found: the mask covers {100 * mask.mean():.2f}% of the image "
            f"(< {100 * config.min_breast_fraction:g}%); blank, cropped or not a mammogram"
        )
    stack = [zero_background(a, mask) for a in stack]
    canon, mask, orientation = face_left(stack[0], mask, info)
    stack = [canon] + [flip(a) if orientation.flipped else a for a in stack[1:]]
    n, w = len(stack), img.shape[1]
    joint = normalize(np.concatenate(stack, axis=1), np.concatenate([mask] * n, axis=1), config)
    parts = [joint[:, i * w : (i + 1) * w] for i in range(n)]
    box = None
    if config.crop_to_breast:
        box = breast_box(mask, config.crop_margin_px)
        y, x, h, w = box
        parts, mask = [p[y : y + h, x : x + w] for p in parts], mask[y : y + h, x : x + w]
    parts = [np.ascontiguousarray(p, np.float32) for p in parts]
    return Preprocessed(
        image=parts[0],
        mask=np.ascontiguousarray(mask, bool),
        orientation=orientation,
        inverted=inverted,
        crop_box=box,
        source_shape=(int(img.shape[0]), int(img.shape[1])),
        info=info if isinstance(info, ImageInfo) else None,
        companions=tuple(parts[1:]),
    )


def preprocess_file(
    path: str | os.PathLike[str], config: PreprocessConfig = DEFAULT_PREPROCESS, **read_kwargs: Any
) -> Preprocessed:
    image, info = read_image(path, apply_voi=config.apply_voi, **read_kwargs)
    return preprocess_image(image, info, config)


# ---- what is an image --------------------------------------------------------------------------
def is_label_mask(path: str | os.PathLike[str]) -> bool:
    """Named as a label mask (``<stem>_mask.<ext>``): a label, never a training image."""
    stem = Path(path).stem
    return stem.endswith(LABEL_MASK_SUFFIX) and stem != LABEL_MASK_SUFFIX


def label_mask_target(path: str | os.PathLike[str], siblings: Sequence[str]) -> Path | None:
    """The image a label mask labels: ``x_mask.png`` -> ``x.<any ext>`` (or ``x``) among the file names
    ``siblings`` of its folder; None when the mask's image is not there."""
    p = Path(path)
    if not is_label_mask(p):
        return None
    target = p.stem[: -len(LABEL_MASK_SUFFIX)]
    for name in sorted(siblings):
        if name != p.name and not is_label_mask(name) and (Path(name).stem == target or name == target):
            return p.parent / name
    return None
