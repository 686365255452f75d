"""What a lesion request says and where it lands: the one lesion geometry of training and insertion.

A lesion is asked for by kind, centre (row, col in the input's pixels, as given, before any flip)
and diameter, or by an explicit mask (in JSON ``{"kind", "mask": N}``: the N-th uploaded mask). Its
*mask* is exactly what was asked (a disc of that diameter, or the given mask): the label a detector is
trained on. Its *edit region* is the mask grown by a kind-dependent margin (spicules and a blurred rim
reach beyond the core): only pixels inside it may change, and the blend from generated to input pixels
happens inside it, so every pixel outside is the input's, bit for bit.

No torch here: the API validates lesion lists with this module before anything is queued.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from models.errors import BadInputError

#: The kinds the procedural phantoms draw (and the demo lesion networks know), in class-index order.
LESION_KINDS: tuple[str, ...] = ("mass", "spiculated_mass", "calcifications")
#: Edit-region margin as a fraction of the diameter (spiculated masses reach furthest), plus MIN_MARGIN_PX.
EDIT_MARGIN: dict[str, float] = {"mass": 0.35, "spiculated_mass": 0.7, "calcifications": 0.25}
MIN_MARGIN_PX = 3.0
#: A request may hold at most this many lesions (each is one sampled window).
MAX_LESIONS = 16
#: Diameters below this are a few pixels of noise, not a lesion.
MIN_DIAMETER_PX = 3.0


@dataclass(frozen=True)
class LesionSpec:
    """One lesion to insert: kind, centre (row, col) and diameter in the input's pixels, or a mask."""

    kind: str
    center: tuple[float, float] = (0.0, 0.0)
    diameter_px: float = 0.0
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # bool, the input's size
    #: Which uploaded mask it is (the index of the request's ``masks`` parts): how it travels in JSON.
    mask_ref: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise BadInputError(f"lesion kind must be a name, got {self.kind!r}")
        if self.mask is not None:
            m = np.asarray(self.mask).astype(bool)
            if m.ndim != 2 or not m.any():
                raise BadInputError("an explicit lesion mask must be a 2-D image with at least one lesion pixel")
            rows, cols = np.nonzero(m)
            object.__setattr__(self, "mask", m)
            object.__setattr__(self, "center", (float(rows.mean()), float(cols.mean())))
            extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
            object.__setattr__(self, "diameter_px", float(extent))
            return
        c = self.center
        if not isinstance(c, list | tuple) or len(c) != 2 or not all(_real(v) for v in c):
            raise BadInputError(f"lesion centre must be two numbers (row, col), got {c!r}")
        object.__setattr__(self, "center", (float(c[0]), float(c[1])))
        d = self.diameter_px
        if not _real(d) or not math.isfinite(float(d)) or float(d) <= 0:
            raise BadInputError(f"lesion diameter must be a positive number of pixels, got {d!r}")
        if float(d) < MIN_DIAMETER_PX:
            raise BadInputError(f"lesion diameter {d} px is below the minimum of {MIN_DIAMETER_PX:g} px")
        object.__setattr__(self, "diameter_px", float(d))

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"kind", "mask": N}`` for an uploaded mask (the mask travels as a file, not in JSON),
        else the placement."""
        if self.mask is not None and self.mask_ref is not None:
            return {"kind": self.kind, "mask": self.mask_ref}
        return self.placement()

    def placement(self) -> dict[str, Any]:
        """Kind, centre and diameter (for a mask: its centroid and extent), as reports state them."""
        return {"kind": self.kind, "center": list(self.center), "diameter_px": self.diameter_px}

    @classmethod
    def from_dict(cls, d: dict[str, Any], masks: Sequence[np.ndarray] | None = None) -> LesionSpec:
        """A lesion by ``{"kind", "center", "diameter_px"}``, or ``{"kind", "mask": N}``: the N-th of ``masks``."""
        ref = mask_index(d)
        if ref is not None:
            if masks is None or ref >= len(masks):
                sent = 0 if masks is None else len(masks)
                raise BadInputError(f"mask {ref} names a masks part that was not sent ({sent} sent; 0 is the first)")
            return cls(kind=d["kind"], mask=masks[ref], mask_ref=ref)
        if not isinstance(d, dict):
            raise BadInputError(f"a lesion must be an object with kind, center and diameter_px, got {d!r}")
        unknown = sorted(set(d) - {"kind", "center", "diameter_px"})
        if unknown:
            raise BadInputError(f"unknown lesion field(s): {', '.join(unknown)}")
        missing = [k for k in ("kind", "center", "diameter_px") if k not in d]
        if missing:
            raise BadInputError(f"a lesion needs {', '.join(missing)}")
        return cls(kind=d["kind"], center=d["center"], diameter_px=d["diameter_px"])

    @classmethod
    def parse(cls, text: str) -> LesionSpec:
        """The CLI form ``KIND:ROW,COL,DIAMETER_PX``."""
        kind, sep, rest = text.partition(":")
        parts = rest.split(",")
        if not sep or len(parts) != 3:
            raise BadInputError(f"a lesion is KIND:ROW,COL,DIAMETER_PX (e.g. mass:300,200,24), got {text!r}")
        try:
            row, col, diameter = (float(p) for p in parts)
        except ValueError as exc:
            raise BadInputError(f"lesion {text!r}: row, col and diameter must be numbers") from exc
        return cls(kind=kind.strip(), center=(row, col), diameter_px=diameter)

    def lesion_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The label: the explicit mask, or a disc of the diameter at the centre (input frame)."""
        if self.mask is not None:
            if self.mask.shape != tuple(shape):
                raise BadInputError(
                    f"lesion mask is {self.mask.shape[0]}x{self.mask.shape[1]}, the image {shape[0]}x{shape[1]}"
                )
            return self.mask.copy()
        return disc(shape, self.center, self.diameter_px / 2.0)

    def margin_px(self) -> float:
        return EDIT_MARGIN.get(self.kind, 0.5) * self.diameter_px + MIN_MARGIN_PX

    def blend_px(self) -> float:
        """Width of the blend from generated to input pixels, inside the edit region's border."""
        return max(2.0, self.margin_px() / 2.0)

    def edit_region(self, shape: tuple[int, int]) -> np.ndarray:
        """Pixels the insertion may change: the mask grown by :meth:`margin_px`."""
        return grow(self.lesion_mask(shape), self.margin_px())

    def extent_px(self) -> float:
        """Side of the square the edit region needs."""
        return self.diameter_px + 2.0 * self.margin_px()


def mask_index(d: Any) -> int | None:
    """The uploaded mask a lesion entry ``{"kind", "mask": N}`` names (None: a lesion by centre and size);
    BadInputError for a malformed entry. The mask gives the centre and size, so nothing else may."""
    if not isinstance(d, dict) or "mask" not in d:
        return None
    extra = sorted(set(d) - {"kind", "mask"})
    if extra:
        raise BadInputError(
            f"a lesion given by a mask takes its centre and size from the mask: give kind and mask only, "
            f"not {', '.join(extra)}"
        )
    if "kind" not in d:
        raise BadInputError("a lesion needs kind")
    ref = d["mask"]
    if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref < MAX_LESIONS:
        raise BadInputError(
            f"a lesion's mask is the index of a masks part (0 = the first sent, at most {MAX_LESIONS - 1}), got {ref!r}"
        )
    return ref


def check_mask_refs(refs: Sequence[int | None], sent: int) -> None:
    """Each uploaded mask is one lesion: every ``mask`` index names a part that was sent, no part is named
    twice or left unnamed, and no more parts than lesions allowed. ``refs``: per lesion, its index or None."""
    if sent > MAX_LESIONS:
        raise BadInputError(f"at most {MAX_LESIONS} masks parts (one per lesion), got {sent}")
    named: dict[int, int] = {}
    for n, ref in enumerate(refs, 1):
        if ref is None:
            continue
        if ref >= sent:
            raise BadInputError(
                f"lesion {n}: mask {ref} names a masks part that was not sent ({sent} sent; 0 is the first)"
            )
        if ref in named:
            raise BadInputError(f"masks part {ref} is named by lesions {named[ref]} and {n}: one mask is one lesion")
        named[ref] = n
    unused = [i for i in range(sent) if i not in named]
    if unused:
        raise BadInputError(
            f"masks part(s) {', '.join(map(str, unused))} named by no lesion: give each one as "
            '{"kind": ..., "mask": index} in lesions'
        )


def check_lesions(
    lesions: list[LesionSpec] | tuple[LesionSpec, ...],
    shape: tuple[int, int],
    kinds: tuple[str, ...],
    breast: np.ndarray | None = None,
) -> None:
    """BadInputError naming the first lesion that cannot be inserted into an image of ``shape``."""
    if not lesions:
        raise BadInputError("give at least one lesion")
    if len(lesions) > MAX_LESIONS:
        raise BadInputError(f"at most {MAX_LESIONS} lesions per image, got {len(lesions)}")
    h, w = shape
    for n, les in enumerate(lesions, 1):
        if les.kind not in kinds:
            raise BadInputError(f"lesion {n}: unknown kind {les.kind!r}; this bundle inserts {', '.join(kinds)}")
        r, c = les.center
        rad = les.diameter_px / 2.0
        if not (0 <= r < h and 0 <= c < w):
            raise BadInputError(f"lesion {n}: centre ({r:g}, {c:g}) is off the {h}x{w} image")
        if les.mask is None and (r - rad < 0 or c - rad < 0 or r + rad > h or c + rad > w):
            raise BadInputError(
                f"lesion {n}: a {les.diameter_px:g} px lesion at ({r:g}, {c:g}) reaches off the {h}x{w} image"
            )
        if les.mask is not None and les.mask.shape != (h, w):
            raise BadInputError(f"lesion {n}: its mask is {les.mask.shape}, the image {h}x{w}")
        if breast is not None:
            inside = breast[les.lesion_mask(shape)]
            if not breast[min(round(r), h - 1), min(round(c), w - 1)] or inside.mean() < 0.9:
                raise BadInputError(
                    f"lesion {n}: at ({r:g}, {c:g}) it lies outside the breast "
                    f"({100 * inside.mean():.0f}% of it inside; at least 90% must be)"
                )


# -- pure geometry ---------------------------------------------------------------------------------


def disc(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` of ``center`` (at least the centre pixel)."""
    h, w = shape
    yy, xx = np.ogrid[0:h, 0:w]
    m = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2
    r, c = round(center[0]), round(center[1])
    if 0 <= r < h and 0 <= c < w:
        m[r, c] = True
    return m


def grow(mask: np.ndarray, by_px: float) -> np.ndarray:
    """The mask dilated by a Euclidean distance (a round margin, not a square one)."""
    if by_px <= 0:
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= by_px


def feather(region: np.ndarray, width_px: float) -> np.ndarray:
    """Blend weight in [0, 1]: 0 on and outside the region's border, rising to 1 over ``width_px`` inside."""
    inside = ndimage.distance_transform_edt(region)
    return np.clip((inside - 0.5) / max(width_px, 1.0), 0.0, 1.0).astype(np.float32)


def window_origin(center: float, size: int, extent: int) -> int:
    """Start of a ``size`` window centred on ``center`` and shifted to lie inside [0, extent)."""
    return int(min(max(round(center - size / 2.0 + 0.5), 0), max(extent - size, 0)))


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
