"""Mask-guided lesion insertion: regenerate only the region around each lesion, hand back its exact mask.

    inserter = LesionInserter.from_bundle("models/demo_bundles/demo-mambo")
    result = inserter(image01, [LesionSpec("mass", (300, 200), 24)], SamplingOptions(seeds=(7,)))
    result.image, result.masks, result.records

For each lesion, in the frame the networks know (``models.preprocess``: chest wall left, the bundle's
intensity mapping):

1. pick the scale: native resolution (stage 3) when the lesion's edit region fits one s x s window,
   else the mid resolution (stage 2, area-downsampled by k);
2. denoise that window with the lesion network, conditioned on the window (as it is, or with the edit
   region blanked for a network trained on real ROI masks: its manifest says which) and the lesion
   mask, guided toward the lesion kind; pixels outside the edit region are held by replacement (the
   same inpainting as MAMBO's overlaps), so the new pixels continue the old ones;
3. blend the change into the image with a weight that is 1 on the lesion and falls to 0 at the edit
   region's border (at mid resolution the change is upsampled first);
4. map back through the inverse intensity window and flip: pixels outside the union of the edit
   regions are copied from the input, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.bundle import BundleRef
from models.devices import Device
from models.errors import BadInputError, BundleIntegrityError
from models.geometry import area_downsample_image
from models.intensity import IntensityMapping
from models.lesion_spec import EDIT_MARGIN, MIN_MARGIN_PX, LesionSpec, check_lesions, feather, window_origin
from models.mambo import MamboPipeline, OnMambo
from models.options import SamplingOptions
from models.preprocess import Preprocessed, preprocess_image
from models.progress import CancelFn, ProgressFn, Reporter, progress_share
from models.sampling import CallStats, denoise, tile_generator, unet_predictor

Scale = Literal["patch", "local"]


@dataclass
class InsertionResult:
    image: np.ndarray  # float32 (H, W) in [0, 1], the input's frame; outside ``edited`` = the input
    masks: list[np.ndarray]  # bool (H, W) per lesion: exactly what was asked
    edited: np.ndarray  # bool (H, W): the union of the edit regions (the only pixels that may differ)
    records: list[dict[str, Any]]  # per lesion: what was put where, at which scale
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def union(self) -> np.ndarray:
        out = np.zeros(self.image.shape, bool)
        for m in self.masks:
            out |= m
        return out


class LesionInserter(OnMambo):
    """Insertion with a MAMBO bundle's lesion network (its geometry, schedule and preprocessing)."""

    def __init__(self, mambo: MamboPipeline) -> None:
        super().__init__(mambo)
        if mambo.lesion_unet is None:
            raise BundleIntegrityError(
                f"bundle {mambo.name} has no lesion network; add one with `mammogen train lesions --bundle ...`"
            )
        self.unet = mambo.lesion_unet
        self.kinds = mambo.lesion_classes

    @classmethod
    def from_bundle(
        cls, bundle: BundleRef, device: Device = "cpu", dtype: torch.dtype = torch.float32
    ) -> LesionInserter:
        return cls(MamboPipeline.from_bundle(bundle, device, dtype))

    def prepare(self, image: np.ndarray, info: Any = None) -> Preprocessed:
        """The image as the networks see it (the bundle's preprocessing chain), once per image."""
        return preprocess_image(np.asarray(image, np.float32), info, self.mambo.preprocess)

    def check(
        self, image: np.ndarray, lesions: Sequence[LesionSpec], info: Any = None, prep: Preprocessed | None = None
    ) -> Preprocessed:
        """Every lesion insertable into ``image`` (kind known, on the image, in the breast, small enough);
        ``prep``: the image already prepared (:meth:`prepare`), to check several lesion lists on one."""
        prep = self.prepare(image, info) if prep is None else prep
        breast = prep.to_source(prep.mask).astype(bool)
        check_lesions(list(lesions), prep.source_shape, self.kinds, breast)
        g = self.mambo.geometry
        for n, les in enumerate(lesions, 1):
            if les.extent_px() > g.s * g.k:
                biggest = (g.s * g.k - 2 * MIN_MARGIN_PX) / (1 + 2 * max(EDIT_MARGIN.values()))
                raise BadInputError(
                    f"lesion {n}: a {les.diameter_px:g} px {les.kind} needs a {les.extent_px():.0f} px edit region; "
                    f"this bundle edits at most {g.s * g.k} px (lesions up to about {biggest:.0f} px)"
                )
        return prep

    def __call__(
        self,
        image: np.ndarray,
        lesions: Sequence[LesionSpec],
        options: SamplingOptions,
        *,
        info: Any = None,
        callback: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> InsertionResult:
        t0 = time.perf_counter()
        source = np.asarray(image, np.float32)
        prep = self.check(source, lesions, info)
        spec = self.mambo.spec(options)
        reporter = Reporter(callback, cancel, stage_weights={"lesion": len(lesions) * options.steps})
        reporter.check_cancel()
        canon_in = prep.to_canonical(source)
        slope, offset = _intensity_map(canon_in, prep.image, prep.mask)
        y = prep.image.astype(np.float32).copy()
        shape = prep.source_shape
        masks, edited, records = [], np.zeros(shape, bool), []
        calls = CallStats()
        for n, les in enumerate(lesions):
            mask_in, region_in = les.lesion_mask(shape), les.edit_region(shape)
            mask_c, region_c = prep.to_canonical(mask_in), prep.to_canonical(region_in)
            scale, window = self._insert_one(y, mask_c, region_c, les, spec, n, len(lesions), calls, reporter)
            masks.append(mask_in)
            edited |= region_in
            records.append(
                {
                    **les.placement(),
                    "index": n,
                    "mask_pixels": int(mask_in.sum()),
                    "bbox": _bbox(mask_in),
                    "edit_bbox": _bbox(region_in),
                    "scale": scale,
                    "window_bbox": _bbox(prep.to_source(window)),
                }
            )
        reporter.finish_stage("lesion")
        # back to the input's intensities and frame; only edited pixels change
        back = prep.to_source(np.clip((y - offset) / slope, 0.0, 1.0).astype(np.float32))
        out = source.copy()
        out[edited] = back[edited]
        stats = {
            "seconds": round(time.perf_counter() - t0, 4),
            "model_evaluations": calls.model_evaluations,
            "sequential_calls": calls.sequential_calls,
            "sampler": options.sampler,
            "steps": options.steps,
            "guidance_scale": options.guidance_scale,
            "seed": options.seed,
            "orientation": prep.orientation.to_dict(),
        }
        return InsertionResult(out, masks, edited, records, stats)

    def _insert_one(
        self,
        y: np.ndarray,
        mask_c: np.ndarray,
        region_c: np.ndarray,
        les: LesionSpec,
        spec: Any,
        n: int,
        n_lesions: int,
        calls: CallStats,
        reporter: Reporter,
    ) -> tuple[Scale, np.ndarray]:
        """Insert one lesion into the canonical image ``y`` (in place); returns the scale and the window
        it sampled (a canonical mask)."""
        g = self.mambo.geometry
        s = g.s
        factor, scale = (1, "patch") if les.extent_px() <= s else (g.k, "local")
        low = area_downsample_image(y, factor)
        mask_f = area_downsample_image(mask_c.astype(np.float32), factor) >= 0.5
        region_f = area_downsample_image(region_c.astype(np.float32), factor) > 0.0
        if not mask_f.any():  # a lesion smaller than one mid pixel still marks its pixel
            r, c = np.argwhere(mask_c).mean(axis=0) / factor
            mask_f[min(int(r), mask_f.shape[0] - 1), min(int(c), mask_f.shape[1] - 1)] = True
        rows, cols = np.nonzero(region_f)
        y0 = window_origin((rows.min() + rows.max()) / 2.0, s, low.shape[0])
        x0 = window_origin((cols.min() + cols.max()) / 2.0, s, low.shape[1])
        win_img, win_mask, win_region = (_window(a, y0, x0, s) for a in (low, mask_f, region_f))
        device = self.mambo.device
        x_img = IntensityMapping.to_model(torch.from_numpy(win_img))[None, None].to(device)
        residual = self.mambo.lesion_conditioning == "residual"
        region_t = torch.from_numpy(win_region)[None, None].to(device)
        # the context: the window as it is ("residual": the network draws the lesion layer over it), or
        # with the edit region blanked ("masked": the network redraws the region, lesion included)
        context = x_img if residual else torch.where(region_t, torch.full_like(x_img, -1.0), x_img)
        cond = torch.cat(
            [context, torch.from_numpy(np.where(win_mask, 1.0, -1.0).astype(np.float32))[None, None].to(device)], 1
        )
        label = self.kinds.index(les.kind)
        x0_gen = denoise(
            unet_predictor(self.unet, cond, spec.options.max_batch, calls, label, spec.options.guidance_scale),
            spec,
            (1, 1, s, s),
            [tile_generator(spec.options.seed, "lesion", n)],
            device=device,
            known_x0=torch.zeros_like(x_img) if residual else x_img,  # outside the region: no change
            known_mask=~region_t.cpu(),
            on_step=lambda i, total: reporter.step("lesion", n * total + i, n_lesions * total),
        )
        out = x0_gen[0, 0].float().cpu().numpy()
        change = IntensityMapping.residual_from_model(out) if residual else IntensityMapping.from_model(out) - win_img
        change = change * win_region
        h, w = low.shape
        hh, ww = min(s, h - y0), min(s, w - x0)
        canvas = np.zeros(low.shape, np.float32)
        canvas[y0 : y0 + hh, x0 : x0 + ww] = change[:hh, :ww]
        if factor > 1:
            up = F.interpolate(
                torch.from_numpy(canvas)[None, None], scale_factor=factor, mode="bilinear", align_corners=False
            )
            full = np.zeros(y.shape, np.float32)
            uh, uw = min(up.shape[-2], y.shape[0]), min(up.shape[-1], y.shape[1])
            full[:uh, :uw] = up[0, 0, :uh, :uw].numpy()
            canvas = full
        weight = feather(region_c, les.blend_px())
        y += canvas * weight
        np.clip(y, 0.0, 1.0, out=y)
        win = np.zeros(y.shape, bool)
        win[y0 * factor : (y0 + s) * factor, x0 * factor : (x0 + s) * factor] = True
        return scale, win


def _intensity_map(raw: np.ndarray, normalized: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The linear window the preprocessing applied inside the breast (normalized = slope * raw + offset),
    fitted on unclipped breast pixels, so edited pixels go back to the input's own intensities."""
    sel = mask & (normalized > 0.0) & (normalized < 1.0)
    if sel.sum() < 16 or np.ptp(raw[sel]) <= 0:
        return 1.0, 0.0
    slope, offset = np.polyfit(raw[sel].astype(np.float64), normalized[sel].astype(np.float64), 1)
    if abs(slope) < 1e-6:
        return 1.0, 0.0
    return float(slope), float(offset)


def _window(a: np.ndarray, y0: int, x0: int, s: int) -> np.ndarray:
    """An s x s window (zero / False padded where the image is smaller than the window)."""
    out = np.zeros((s, s), a.dtype)
    part = a[y0 : y0 + s, x0 : x0 + s]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def _bbox(mask: np.ndarray) -> list[int]:
    """[row, col, height, width] of a mask."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(rows.min()), int(cols.min()), int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)]


# -- lesions into generated images (POST /generate with lesions) --------------------------------------


def insert_into_generated(
    inserter: LesionInserter,
    request: Any,
    images: Sequence[np.ndarray],
    *,
    callback: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    share: tuple[float, float] = (0.0, 1.0),
    started: float | None = None,
) -> list[InsertionResult]:
    """A generation request's lesions into each of its images (image i sampled with the request's seed i),
    placed in the image as returned (standard display, chest wall on the request's side: its orientation
    is stated, not guessed). Progress is reported as the ``share`` of the whole job."""
    from models.lesion_outputs import generated_info

    seeds = request.options.seeds
    info = generated_info(request.laterality, request.chest_wall)
    lo, hi = share
    t0 = time.monotonic() if started is None else started
    n = max(1, len(images))
    out = []
    for i, (seed, image) in enumerate(zip(seeds, images, strict=True)):
        part = progress_share(callback, lo + (hi - lo) * i / n, lo + (hi - lo) * (i + 1) / n, t0)
        options = replace(request.options, seeds=(seed,))
        out.append(inserter(image, request.lesions, options, info=info, callback=part, cancel=cancel))
    return out


def insertion_share(mambo: MamboPipeline, request: Any) -> float:
    """The part of a generation-with-lesions job's model evaluations that the insertions take (for progress):
    per step, an image needs 1 + its stage-2 and stage-3 tiles, each lesion one window (two when guided)."""
    if not request.lesions:
        return 0.0
    h = request.height or mambo.native_size[0]
    w = request.width or mambo.native_size[1]
    plan = mambo.plan(h, w)
    generate = 1 + plan.local_grid.n + plan.patch_grid.n
    guided = 2 if request.options.guidance_scale != 1.0 else 1
    insert = len(request.lesions) * guided
    return insert / (generate + insert)
