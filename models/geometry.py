"""The one geometry of MAMBO: canvas, grids, crops, shifts and resizes, for training AND inference.

Everything here is data (frozen dataclasses) or a pure function, so the training crops and the
inference conditioning are built by the same code and cannot drift apart (the reference code
crops context on a 222-px stride and stitches on 224 px: up to 34 px of drift; we test equality).

Coordinates: the image sits at the top-left of a square canvas of side L, a multiple of k*s,
padded with background on the side opposite the chest wall (right/bottom; models see the breast
facing left). Three resolutions share that canvas:

- full: L x L (native pixels),
- mid: L/k x L/k (full block-averaged by k; stage 2 generates it, stage 3 reads it as context),
- global: s x s (full block-averaged by L/s; stage 1 generates it).

Tensors are in model range ([-1, 1], background -1) and shaped (..., H, W).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.intensity import BACKGROUND


@dataclass(frozen=True)
class Box:
    """A y, x, h, w rectangle in some resolution's pixel grid (may extend past the canvas)."""

    y: int
    x: int
    h: int
    w: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    def scaled_down(self, factor: float) -> Box:
        """The smallest box at 1/factor resolution that covers this one (for masks, not for pixels)."""
        y0, x0 = math.floor(self.y / factor), math.floor(self.x / factor)
        y1, x1 = math.ceil((self.y + self.h) / factor), math.ceil((self.x + self.w) / factor)
        return Box(y0, x0, y1 - y0, x1 - x0)


def grid_positions(n: int, size: int, overlap: int) -> tuple[int, ...]:
    """Tile origins covering [0, n) exactly: stride size - overlap, the last one clamped to n - size."""
    if n < size:
        raise ValueError(f"cannot tile length {n} with tiles of {size}")
    stride = size - overlap
    if stride <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {size}")
    count = math.ceil((n - size) / stride) + 1
    return tuple(min(i * stride, n - size) for i in range(count))


@dataclass(frozen=True)
class TileGrid:
    """Overlapping s x s tiles over an h x w region; pixels belong to the first tile in raster order."""

    ys: tuple[int, ...]
    xs: tuple[int, ...]
    size: int
    overlap: int = 0  # nominal overlap (the clamped last tile may overlap more)

    @classmethod
    def cover(cls, height: int, width: int, size: int, overlap: int) -> TileGrid:
        return cls(grid_positions(height, size, overlap), grid_positions(width, size, overlap), size, overlap)

    @property
    def rows(self) -> int:
        return len(self.ys)

    @property
    def cols(self) -> int:
        return len(self.xs)

    @property
    def n(self) -> int:
        return self.rows * self.cols

    @property
    def height(self) -> int:
        return self.ys[-1] + self.size

    @property
    def width(self) -> int:
        return self.xs[-1] + self.size

    def index(self, i: int, j: int) -> int:
        return i * self.cols + j

    def box(self, i: int, j: int) -> Box:
        return Box(self.ys[i], self.xs[j], self.size, self.size)

    def raster(self) -> list[tuple[int, int]]:
        """The paper's order: row by row, left to right."""
        return [(i, j) for i in range(self.rows) for j in range(self.cols)]

    def waves(self) -> list[list[tuple[int, int]]]:
        """Anti-diagonals i + j = d. Every pixel a tile inherits is owned by a tile on an earlier wave,
        so denoising one wave as a batch reproduces the raster result exactly."""
        return [
            [(i, d - i) for i in range(self.rows) if 0 <= d - i < self.cols] for d in range(self.rows + self.cols - 1)
        ]

    def _known_1d(self, pos: tuple[int, ...], i: int) -> np.ndarray:
        """Along one axis: which of tile i's pixels an earlier tile (index < i) already covers."""
        covered_to = pos[i - 1] + self.size if i > 0 else pos[i]
        return np.arange(pos[i], pos[i] + self.size) < covered_to

    def known_mask(self, i: int, j: int) -> np.ndarray:
        """(s, s) bool: pixels of tile (i, j) owned by earlier tiles (first writer wins; never overwritten).

        The owner of a pixel is (first row-tile covering it, first column-tile covering it), so a pixel
        is inherited exactly when an earlier row or an earlier column covers it.
        """
        return self._known_1d(self.ys, i)[:, None] | self._known_1d(self.xs, j)[None, :]

    def owned_box(self, i: int, j: int) -> Box:
        """The rectangle of region pixels that tile (i, j) owns (writes into the stitched image)."""
        y0 = self.ys[i - 1] + self.size if i > 0 else 0
        x0 = self.xs[j - 1] + self.size if j > 0 else 0
        y1, x1 = self.ys[i] + self.size, self.xs[j] + self.size
        return Box(y0, x0, y1 - y0, x1 - x0)

    def owner_map(self) -> np.ndarray:
        """(height, width) raster index of each pixel's owner, painted tile by tile (tests use this)."""
        owner = np.full((self.height, self.width), -1, dtype=np.int64)
        for i, j in self.raster():
            sl = owner[self.box(i, j).slices]
            sl[sl < 0] = self.index(i, j)
        return owner


CONDITIONINGS = ("paper", "aligned")


@dataclass(frozen=True)
class MamboGeometry:
    """s: network input side; k: full/mid scale factor; overlap: pixels shared by neighbouring tiles.

    conditioning: the context of stages 2 and 3. ``paper``: [shifted global, global] (stage 2) and
    [local context, global] (stage 3), as the reference. ``aligned`` puts first the coarser image
    upsampled onto the tile's own pixels, so context and target line up pixel for pixel: a network
    trained on the paper's context learns to ignore it (docs/TRAINING.md measures why).
    """

    s: int = 256
    k: int = 3
    overlap: int = 32
    conditioning: str = "paper"

    def __post_init__(self) -> None:
        if self.s <= 0 or self.k < 1 or not 0 <= self.overlap < self.s:
            raise ValueError(f"invalid MAMBO geometry s={self.s} k={self.k} overlap={self.overlap}")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {self.conditioning!r}; choose one of {CONDITIONINGS}")

    @property
    def context_channels(self) -> int:
        """Clean context channels of the stage-2 and stage-3 networks (their input is 1 + this)."""
        return 3 if self.conditioning == "aligned" else 2

    def canvas_side(self, height: int, width: int) -> int:
        block = self.k * self.s
        return math.ceil(max(height, width) / block) * block

    def plan(self, height: int, width: int) -> MamboPlan:
        """Grids and sizes of one request. Sizes below s are refused (no tile fits)."""
        if height < self.s or width < self.s:
            raise ValueError(f"image {height}x{width} is smaller than one {self.s}x{self.s} tile")
        L = self.canvas_side(height, width)
        mid_side = L // self.k
        mid_h = min(max(math.ceil(height / self.k), self.s), mid_side)
        mid_w = min(max(math.ceil(width / self.k), self.s), mid_side)
        return MamboPlan(
            geometry=self,
            height=height,
            width=width,
            canvas=L,
            mid_side=mid_side,
            local_grid=TileGrid.cover(mid_h, mid_w, self.s, self.overlap),
            patch_grid=TileGrid.cover(height, width, self.s, self.overlap),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MamboGeometry:
        """Bundles written before ``conditioning`` existed used the paper's context."""
        sizes = {k: int(d[k]) for k in ("s", "k", "overlap") if k in d}
        return cls(**sizes, conditioning=d.get("conditioning", "paper"))


@dataclass(frozen=True)
class MamboPlan:
    """The geometry of one H x W request: canvas side L and the stage-2/3 tile grids."""

    geometry: MamboGeometry
    height: int
    width: int
    canvas: int  # L
    mid_side: int  # L / k
    local_grid: TileGrid  # stage 2, in mid pixels, over ceil(H/k) x ceil(W/k)
    patch_grid: TileGrid  # stage 3, in full pixels, over H x W

    @property
    def global_factor(self) -> int:
        return self.canvas // self.geometry.s

    def counts(self) -> dict[str, Any]:
        """Tiles per stage and sequential model calls per denoising step for each stitching mode."""
        lg, pg = self.local_grid, self.patch_grid
        return {
            "canvas": self.canvas,
            "mid": self.mid_side,
            "tiles": {"global": 1, "local": lg.n, "patch": pg.n},
            "grids": {"local": [lg.rows, lg.cols], "patch": [pg.rows, pg.cols]},
            "sequential_calls_per_step": {
                "raster": {"global": 1, "local": lg.n, "patch": pg.n, "total": 1 + lg.n + pg.n},
                "wavefront": {
                    "global": 1,
                    "local": len(lg.waves()),
                    "patch": len(pg.waves()),
                    "total": 1 + len(lg.waves()) + len(pg.waves()),
                },
                "fused": {"global": 1, "local": 1, "patch": 1, "total": 3},
            },
        }


# ---- pixel operations ------------------------------------------------------------------------


def area_downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Block average by an integer factor (exact 'area' resize); (..., H, W) with H, W divisible."""
    if factor == 1:
        return x
    lead = x.shape[:-2]
    y = F.avg_pool2d(x.reshape(-1, 1, *x.shape[-2:]), factor)
    return y.reshape(*lead, *y.shape[-2:])


def area_downsample_image(image: np.ndarray, factor: int) -> np.ndarray:
    """:func:`area_downsample` of a 2-D image of any size: a ragged edge block averages the pixels it
    has (edge-replicated), so every input pixel lands in some output pixel."""
    a = np.asarray(image, np.float32)
    if factor == 1:
        return a.copy()
    h, w = -(-a.shape[0] // factor), -(-a.shape[1] // factor)
    padded = np.pad(a, ((0, h * factor - a.shape[0]), (0, w * factor - a.shape[1])), mode="edge")
    return area_downsample(torch.from_numpy(padded), factor).numpy()


def to_canvas(image: torch.Tensor, side: int, fill: float = BACKGROUND) -> torch.Tensor:
    """Place an (..., H, W) image at the top-left of a side x side canvas filled with background."""
    return crop(image, Box(0, 0, side, side), fill)


def crop(x: torch.Tensor, box: Box, fill: float = BACKGROUND) -> torch.Tensor:
    """(..., box.h, box.w) window of x; parts outside x read ``fill`` (background)."""
    H, W = x.shape[-2:]
    out = x.new_full((*x.shape[:-2], box.h, box.w), fill)
    y0, x0 = max(box.y, 0), max(box.x, 0)
    y1, x1 = min(box.y + box.h, H), min(box.x + box.w, W)
    if y1 > y0 and x1 > x0:
        out[..., y0 - box.y : y1 - box.y, x0 - box.x : x1 - box.x] = x[..., y0:y1, x0:x1]
    return out


def shift_image(x: torch.Tensor, dy: float, dx: float, fill: float = BACKGROUND) -> torch.Tensor:
    """out[i, j] = x[i + dy, j + dx], bilinear for fractional shifts, ``fill`` outside x."""
    H, W = x.shape[-2:]
    pad = math.ceil(max(abs(dy), abs(dx))) + 1
    xp = F.pad(x.reshape(-1, 1, H, W), (pad, pad, pad, pad), value=fill)
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = dy - iy, dx - ix

    def window(oy: int, ox: int) -> torch.Tensor:
        return xp[..., pad + oy : pad + oy + H, pad + ox : pad + ox + W]

    top = window(iy, ix) * (1 - fx) + window(iy, ix + 1) * fx
    bottom = window(iy + 1, ix) * (1 - fx) + window(iy + 1, ix + 1) * fx
    return (top * (1 - fy) + bottom * fy).reshape(x.shape)


def shifted_global(global_image: torch.Tensor, centre_y: float, centre_x: float, canvas: int) -> torch.Tensor:
    """The global image translated so that full-resolution point (centre_y, centre_x) sits at its centre."""
    s = global_image.shape[-1]
    scale = s / canvas
    return shift_image(global_image, centre_y * scale - s / 2, centre_x * scale - s / 2)


def tile_weights(size: int, overlap: int, kind: Literal["uniform", "feather"] = "feather") -> torch.Tensor:
    """(size, size) fusion weights for the fused mode: flat, or ramping up over the overlap at the edges."""
    if kind == "uniform" or overlap == 0:
        return torch.ones(size, size)
    d = torch.arange(size, dtype=torch.float32)
    edge = torch.minimum(d, size - 1 - d)
    ramp = ((edge + 1) / (overlap + 1)).clamp(max=1.0)
    return ramp[:, None] * ramp[None, :]


def upsampled_crop(low: torch.Tensor, box: Box, factor: int) -> torch.Tensor:
    """(box.h, box.w) window of ``low`` (an image whose pixel (0, 0) covers high-res pixels 0..factor-1)
    bilinearly upsampled by ``factor``: the aligned context channel.

    Only the low-res window under the box (plus one pixel each side) is resized, so a tile costs its
    own size and the result equals cropping the whole upsampled image (outside ``low``: background).
    """
    ly, lx = box.y // factor - 1, box.x // factor - 1
    lh, lw = -(-(box.y + box.h) // factor) + 1 - ly, -(-(box.x + box.w) // factor) + 1 - lx
    window = crop(low, Box(ly, lx, lh, lw))
    up = F.interpolate(window.reshape(1, 1, lh, lw), scale_factor=factor, mode="bilinear", align_corners=False)
    oy, ox = box.y - ly * factor, box.x - lx * factor
    return up[0, 0, oy : oy + box.h, ox : ox + box.w]


# ---- stage 2: local context --------------------------------------------------------------------


def local_conditioning(global_image: torch.Tensor, mid_box: Box, plan: MamboPlan) -> torch.Tensor:
    """Stage-2 context for a mid-resolution tile: [shifted global, global], after the global image
    upsampled onto the tile (aligned conditioning)."""
    k = plan.geometry.k
    cy, cx = (mid_box.y + mid_box.h / 2) * k, (mid_box.x + mid_box.w / 2) * k
    channels = [shifted_global(global_image, cy, cx, plan.canvas), global_image]
    if plan.geometry.conditioning == "aligned":
        channels.insert(0, upsampled_crop(global_image, mid_box, plan.mid_side // plan.geometry.s))
    return torch.stack(channels)


def snap_mid_origin(centre_y: float, centre_x: float, plan: MamboPlan) -> tuple[int, int]:
    """Mid-pixel origin of the s x s mid box (= k*s full box) centred at a full-res point, snapped to k."""
    s, k = plan.geometry.s, plan.geometry.k
    return math.floor((centre_y - k * s / 2) / k + 0.5), math.floor((centre_x - k * s / 2) / k + 0.5)


def local_training_example(
    full_canvas: torch.Tensor,
    centre_y: float,
    centre_x: float,
    plan: MamboPlan,
    global_image: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-2 training pair for a k*s crop centred at a full-res point: (target (s, s), context (2, s, s)).

    The target is area-resize(crop(full)); it equals the crop of the block-averaged mid image.
    """
    s, k = plan.geometry.s, plan.geometry.k
    g = area_downsample(full_canvas, plan.global_factor) if global_image is None else global_image
    my, mx = snap_mid_origin(centre_y, centre_x, plan)
    target = area_downsample(crop(full_canvas, Box(my * k, mx * k, k * s, k * s)), k)
    return target, local_conditioning(g, Box(my, mx, s, s), plan)


# ---- stage 3: patches -------------------------------------------------------------------------------


def patch_context_box(patch: Box, plan: MamboPlan) -> Box:
    """Mid-resolution s x s box of a patch's local context: the k*s full box centred on the patch,
    with its origin snapped to a multiple of k (centre within k/2 px), so it is an exact mid crop."""
    my, mx = snap_mid_origin(patch.y + patch.h / 2, patch.x + patch.w / 2, plan)
    return Box(my, mx, plan.geometry.s, plan.geometry.s)


def patch_conditioning(
    mid_canvas: torch.Tensor, global_image: torch.Tensor, patch: Box, plan: MamboPlan
) -> torch.Tensor:
    """Stage-3 context: [local context cropped from the mid image, global], after the mid image
    upsampled onto the patch (aligned conditioning)."""
    channels = [crop(mid_canvas, patch_context_box(patch, plan)), global_image]
    if plan.geometry.conditioning == "aligned":
        channels.insert(0, upsampled_crop(mid_canvas, patch, plan.geometry.k))
    return torch.stack(channels)


def patch_training_example(
    full_canvas: torch.Tensor,
    centre_y: int,
    centre_x: int,
    plan: MamboPlan,
    global_image: torch.Tensor | None = None,
    mid_canvas: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-3 training pair for the s x s patch centred at a full-res pixel: (patch (s, s), context).

    The context is :func:`patch_conditioning` of the block-averaged mid image: exactly what inference
    builds from a mid image that matches the full one (pass ``mid_canvas`` to reuse it).
    """
    s = plan.geometry.s
    g = area_downsample(full_canvas, plan.global_factor) if global_image is None else global_image
    mid = area_downsample(full_canvas, plan.geometry.k) if mid_canvas is None else mid_canvas
    patch = Box(centre_y - s // 2, centre_x - s // 2, s, s)
    return crop(full_canvas, patch), patch_conditioning(mid, g, patch, plan)
