"""Stage datasets: preprocessed mammograms -> the exact tensors each network is trained on.

Every crop, shift and resize goes through :mod:`models.geometry`, the module inference uses, so a
training example and the conditioning the pipeline builds at the same place are equal by
construction (the reference code's 222/224-px drift cannot come back).

- stage 1 (``global``): the whole image on its canvas, block-averaged to s x s.      (1, s, s)
- stage 2 (``local``):  k*s crop around a random in-breast centre -> s; shifted global; global.  (3, s, s)
- stage 3 (``patch``):  native s x s patch at a random in-breast centre; its local context; global.  (3, s, s)
- dual-view: CC and MLO of one breast at ``size`` as R, G and |R - G|.                (3, size, size)

Sources implement :class:`training.loop.BatchSource`: a batch is drawn only from the generator the
loop passes in (seeded by (seed, step, rank)), so resume is exact and ranks see different data.
Images arrive preprocessed (paper §9: breast mask, background 0, chest wall on the left, [0, 1]).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch

from models.dualview import encode_pair
from models.errors import BadInputError
from models.geometry import (
    MamboGeometry,
    MamboPlan,
    area_downsample,
    local_training_example,
    patch_training_example,
    to_canvas,
)
from models.intensity import IntensityMapping

Stage = Literal["global", "local", "patch"]
STAGES: tuple[Stage, ...] = ("global", "local", "patch")
#: CLI names of the stages (paper numbering) -> bundle network names.
STAGE_NAMES: dict[str, Stage] = {"stage1": "global", "stage2": "local", "stage3": "patch"}


@dataclass(frozen=True)
class MammoImage:
    """One preprocessed view: float32 H x W in [0, 1], chest wall on the left, background 0."""

    image: np.ndarray
    mask: np.ndarray  # bool H x W, the breast
    meta: dict[str, Any] = field(default_factory=dict)  # laterality, view, patient_id, study_uid, source...


class ImageSet(Protocol):
    """Random access to preprocessed images (in memory, or a memory-mapped cache)."""

    def __len__(self) -> int: ...

    def get(self, index: int) -> MammoImage: ...

    def describe(self) -> dict[str, Any]: ...


class InMemoryImages:
    """A list of preprocessed images (phantoms, tests, small folders)."""

    def __init__(self, items: Sequence[MammoImage], description: dict[str, Any] | None = None) -> None:
        if not items:
            raise BadInputError("no training images")
        self.items = list(items)
        self.description = description or {"kind": "in-memory"}

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int) -> MammoImage:
        return self.items[index]

    def describe(self) -> dict[str, Any]:
        return {**self.description, "images": len(self.items)}


# -- sampling helpers ----------------------------------------------------------------------------


def _randint(generator: torch.Generator, high: int) -> int:
    return int(torch.randint(0, high, (1,), generator=generator))


def sample_in_breast(mask: np.ndarray, generator: torch.Generator, tries: int = 64) -> tuple[int, int]:
    """A uniformly random breast pixel (y, x), drawn only from ``generator``.

    Rejection sampling inside the mask's bounding box keeps memory flat on 3840-px images; the
    exact fallback (index into all mask pixels) is taken only for pathological masks.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise BadInputError("image has an empty breast mask")
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    draws = torch.rand(tries, 2, generator=generator).numpy()
    for u, v in draws:
        y, x = y0 + int(u * (y1 - y0)), x0 + int(v * (x1 - x0))
        if mask[y, x]:
            return y, x
    flat = np.flatnonzero(mask)
    idx = flat[int(draws[0, 0] * flat.size)]
    return int(idx // mask.shape[1]), int(idx % mask.shape[1])


class CanvasEntry(NamedTuple):
    canvas: torch.Tensor  # full resolution, model range
    global_image: torch.Tensor  # s x s
    mid_canvas: torch.Tensor  # canvas / k
    plan: MamboPlan
    mask: np.ndarray


class _CanvasCache:
    """Per image: its full canvas in model range, its global and mid images and plan. LRU-bounded for big images."""

    def __init__(self, images: ImageSet, geometry: MamboGeometry, capacity: int = 16) -> None:
        self.images, self.geometry, self.capacity = images, geometry, capacity
        self._entries: OrderedDict[int, CanvasEntry] = OrderedDict()

    def get(self, index: int) -> CanvasEntry:
        if index in self._entries:
            self._entries.move_to_end(index)
            return self._entries[index]
        item = self.images.get(index)
        h, w = item.image.shape
        plan = self.geometry.plan(h, w)
        full = torch.from_numpy(np.ascontiguousarray(IntensityMapping.to_model(item.image), dtype=np.float32))
        canvas = to_canvas(full, plan.canvas)
        entry = CanvasEntry(
            canvas,
            area_downsample(canvas, plan.global_factor),
            area_downsample(canvas, self.geometry.k),
            plan,
            np.asarray(item.mask, dtype=bool),
        )
        self._entries[index] = entry
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry


# -- MAMBO stages --------------------------------------------------------------------------------


class MamboStageSource:
    """Training examples of one MAMBO stage, built only through :mod:`models.geometry`."""

    def __init__(self, images: ImageSet, stage: Stage, geometry: MamboGeometry, cache_images: int = 16) -> None:
        if stage not in STAGES:
            raise BadInputError(f"unknown stage {stage!r}; choose one of {STAGES}")
        if len(images) == 0:
            raise BadInputError("no training images")
        self.images, self.stage, self.geometry = images, stage, geometry
        self.channels = 1 if stage == "global" else 1 + geometry.context_channels
        self.size = geometry.s
        self._cache = _CanvasCache(images, geometry, cache_images)

    def example(self, index: int, centre: tuple[int, int] | None = None) -> torch.Tensor:
        """(channels, s, s) for image ``index`` at full-resolution ``centre`` (ignored by stage 1)."""
        e = self._cache.get(index)
        if self.stage == "global":
            return e.global_image[None]
        if centre is None:
            raise ValueError("stages 2 and 3 need a centre")
        if self.stage == "local":
            target, context = local_training_example(e.canvas, centre[0], centre[1], e.plan, e.global_image)
        else:
            target, context = patch_training_example(
                e.canvas, centre[0], centre[1], e.plan, e.global_image, e.mid_canvas
            )
        return torch.cat([target[None], context])

    def draw(self, generator: torch.Generator) -> tuple[int, tuple[int, int] | None]:
        """(image index, in-breast centre) of one example."""
        index = _randint(generator, len(self.images))
        if self.stage == "global":
            return index, None
        return index, sample_in_breast(self._cache.get(index).mask, generator)

    def batch(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        return torch.stack([self.example(*self.draw(generator)) for _ in range(batch_size)])

    def describe(self) -> dict[str, Any]:
        return {"stage": self.stage, "geometry": self.geometry.to_dict(), "images": self.images.describe()}


# -- dual-view -----------------------------------------------------------------------------------


def find_pairs(images: ImageSet) -> list[tuple[int, int]]:
    """(CC index, MLO index) of each breast with both views: same patient, study and laterality."""
    views: dict[tuple[Any, ...], dict[str, int]] = {}
    for i in range(len(images)):
        meta = images.get(i).meta
        view = str(meta.get("view") or "").upper()
        if view not in ("CC", "MLO"):
            continue
        key = (meta.get("patient_id"), meta.get("study_uid"), meta.get("laterality"))
        views.setdefault(key, {}).setdefault(view, i)
    return [(v["CC"], v["MLO"]) for v in views.values() if "CC" in v and "MLO" in v]


def view_at_size(image: np.ndarray, size: int) -> torch.Tensor:
    """A whole view on its square canvas (top-left, background 0), block-averaged to ``size`` (geometry ops)."""
    h, w = image.shape
    side = -(-max(h, w) // size) * size
    canvas = to_canvas(torch.from_numpy(np.array(image, dtype=np.float32)), side, fill=0.0)  # copy: may be a memmap
    return area_downsample(canvas, side // size)


class DualViewSource:
    """CC + MLO pairs of one breast as R, G and |R - G| (dual-view paper §2.2), in model range.

    Both views come preprocessed with the chest wall on the left (the canonical side; the bundle
    records ``chest_wall: left`` and the pipeline mirrors on request).
    """

    channels = 3

    def __init__(self, images: ImageSet, size: int = 256, pairs: Sequence[tuple[int, int]] | None = None) -> None:
        self.images, self.size = images, size
        self.pairs = list(pairs) if pairs is not None else find_pairs(images)
        if not self.pairs:
            raise BadInputError("no CC + MLO pairs of the same breast (patient, study, laterality) found")
        self._cache: dict[int, torch.Tensor] = {}

    def _view(self, index: int) -> torch.Tensor:
        if index not in self._cache:
            self._cache[index] = view_at_size(self.images.get(index).image, self.size)
        return self._cache[index]

    def example(self, pair: int) -> torch.Tensor:
        cc, mlo = self.pairs[pair]
        return IntensityMapping.to_model(encode_pair(self._view(cc), self._view(mlo)))

    def batch(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        return torch.stack([self.example(_randint(generator, len(self.pairs))) for _ in range(batch_size)])

    def describe(self) -> dict[str, Any]:
        return {
            "stage": "dualview",
            "size": self.size,
            "pairs": len(self.pairs),
            "chest_wall": "left",
            "images": self.images.describe(),
        }


def native_size(images: ImageSet, limit: int = 256) -> list[int]:
    """The most common H x W among the first ``limit`` images: the size a bundle generates by default."""
    shapes = [tuple(images.get(i).image.shape) for i in range(min(len(images), limit))]
    return list(max(set(shapes), key=shapes.count))


def make_source(images: ImageSet, stage: str, geometry: MamboGeometry, dualview_size: int = 256) -> Any:
    """The batch source for a CLI stage name (stage1|stage2|stage3|dualview)."""
    if stage == "dualview":
        return DualViewSource(images, dualview_size)
    if stage not in STAGE_NAMES:
        raise BadInputError(f"unknown stage {stage!r}; choose stage1, stage2, stage3 or dualview")
    return MamboStageSource(images, STAGE_NAMES[stage], geometry)
