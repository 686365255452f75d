"""The MAMBO pipeline (paper Algorithm 2, three times): global image -> mid image -> full image.

    pipe = MamboPipeline.from_bundle("models/demo_bundles/demo-mambo")
    result = pipe(3328, 2560, SamplingOptions(seeds=(1,), steps=50, sampler="ddim", stitching="wavefront"))
    result.image  # float32 H x W in [0, 1], chest wall on the chosen side

Stage methods take and return images in [0, 1] so super-resolution can hand in a REAL global
(and mid) image instead of generating it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Self

import numpy as np
import torch
from diffusers import UNet2DModel

from models.bundle import BundleRef, open_bundle
from models.devices import Device
from models.errors import BadInputError, BundleIntegrityError
from models.geometry import (
    Box,
    MamboGeometry,
    MamboPlan,
    TileGrid,
    local_conditioning,
    patch_conditioning,
    to_canvas,
)
from models.imaging.mask import breast_mask
from models.intensity import IntensityMapping
from models.options import DEFAULT_OPTIONS, SamplingOptions
from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig
from models.progress import CancelFn, ProgressFn, Reporter
from models.requests import GenerationRequest
from models.sampling import CallStats, SamplerSpec, denoise, tile_generator, unet_predictor
from models.schedulers import NOISE_SCHEDULE
from models.stitching import StageStats, denoise_grids
from models.unet import null_class

ChestWall = Literal["left", "right"]
STAGES: tuple[str, ...] = ("global", "local", "patch")
DEFAULT_MAX_SIDE = 8192


@dataclass
class MamboStats:
    sampler: str
    steps: int
    stitching: str
    images: int = 1  # images denoised together; counts and seconds are for all of them
    stages: dict[str, StageStats] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def model_evaluations(self) -> int:
        return sum(s.model_evaluations for s in self.stages.values())

    @property
    def sequential_calls(self) -> int:
        return sum(s.sequential_calls for s in self.stages.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "steps": self.steps,
            "stitching": self.stitching,
            "images": self.images,
            "model_evaluations": self.model_evaluations,
            "sequential_calls": self.sequential_calls,
            "seconds": round(self.seconds, 4),
            "stages": {k: v.to_dict() for k, v in self.stages.items()},
        }


@dataclass
class MamboResult:
    image: np.ndarray  # float32 (H, W) in [0, 1], chest wall on the requested side
    global_image: np.ndarray  # float32 (s, s) in [0, 1], breast facing left
    mid_image: np.ndarray  # float32 mid-resolution region in [0, 1], breast facing left
    stats: MamboStats
    plan: MamboPlan


class MamboPipeline:
    """Three channel-conditioned U-Nets (global 1-ch, local 3-ch, patch 3-ch) and their geometry."""

    def __init__(
        self,
        global_unet: UNet2DModel,
        local_unet: UNet2DModel,
        patch_unet: UNet2DModel,
        schedule: dict[str, Any] | None = None,
        geometry: MamboGeometry | None = None,
        preprocess: PreprocessConfig = DEFAULT_PREPROCESS,
        *,
        native_size: tuple[int, int] | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
        name: str = "mambo",
        version: str = "",
        classes: tuple[str, ...] = (),
        lesion_unet: UNet2DModel | None = None,
        lesion_classes: tuple[str, ...] = (),
        lesion_conditioning: str = "residual",
    ) -> None:
        self.global_unet, self.local_unet, self.patch_unet = global_unet, local_unet, patch_unet
        # class names of the class-conditional stage networks (label order), and the optional
        # mask-conditioned lesion network (models.lesion_insertion) with its lesion kinds
        self.classes, self.lesion_unet, self.lesion_classes = tuple(classes), lesion_unet, tuple(lesion_classes)
        self.lesion_conditioning = lesion_conditioning
        self.schedule = dict(schedule or NOISE_SCHEDULE)
        self.geometry = geometry or MamboGeometry()
        self.preprocess = preprocess  # how real inputs (super-resolution) are prepared for these networks
        g = self.geometry
        self.native_size = native_size or (g.k * g.s, g.k * g.s)
        self.max_side = max_side
        self.name, self.version = name, version  # the bundle's, for output metadata
        ctx = 1 + g.context_channels
        for name, unet, cin in (("global", global_unet, 1), ("local", local_unet, ctx), ("patch", patch_unet, ctx)):
            if (unet.config.in_channels, unet.config.out_channels) != (cin, 1):
                raise BundleIntegrityError(
                    f"the {name} network must take {cin} channel(s) and predict 1, "
                    f"got {unet.config.in_channels} -> {unet.config.out_channels}"
                )
            if null_class(unet) is not None and null_class(unet) != len(self.classes):
                raise BundleIntegrityError(
                    f"the {name} network has {null_class(unet)} classes, the bundle names {len(self.classes)}"
                )
        if lesion_conditioning not in ("residual", "masked"):
            raise BundleIntegrityError(f"unknown lesion conditioning {lesion_conditioning!r} (residual or masked)")
        if lesion_unet is not None and (lesion_unet.config.in_channels, lesion_unet.config.out_channels) != (3, 1):
            raise BundleIntegrityError("the lesion network must take 3 channels (image, window, mask) and predict 1")

    @classmethod
    def from_bundle(
        cls,
        bundle: BundleRef,
        device: Device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> MamboPipeline:
        b = open_bundle(bundle, "mambo")
        native = b.geometry.get("native_size")
        classes = next((b.classes(n) for n in STAGES if b.classes(n)), ())
        return cls(
            *(b.load_network(n, device, dtype) for n in STAGES),
            schedule=b.schedule,
            geometry=MamboGeometry.from_dict(b.geometry),
            preprocess=b.preprocess,
            native_size=tuple(native) if native else None,
            max_side=max_side,
            name=b.name,
            version=b.version,
            classes=classes,
            lesion_unet=b.load_network("lesion", device, dtype) if b.has_network("lesion") else None,
            lesion_classes=b.classes("lesion"),
            lesion_conditioning=b.network_info("lesion").get("conditioning", "residual"),
        )

    @property
    def device(self) -> torch.device:
        return self.patch_unet.device

    def plan(self, height: int, width: int) -> MamboPlan:
        """The request's geometry; BadInputError for sizes the pipeline cannot or will not make."""
        s = self.geometry.s
        for name, v in (("height", height), ("width", width)):
            if not isinstance(v, int | np.integer) or v <= 0:
                raise BadInputError(f"{name} must be a positive integer, got {v!r}")
            if v < s:
                raise BadInputError(f"{name} {v} is smaller than one {s}-pixel tile; the minimum is {s}")
            if v > self.max_side:
                raise BadInputError(f"{name} {v} exceeds the configured maximum of {self.max_side} pixels")
        return self.geometry.plan(int(height), int(width))

    # ---- the whole pipeline ------------------------------------------------------------------------

    def run(
        self, request: GenerationRequest, callback: ProgressFn | None = None, cancel: CancelFn | None = None
    ) -> list[MamboResult]:
        """A generation request (``model: mambo``): one image per seed, in lock-step, chest wall on the
        request's side. ``mammogen generate`` and the service's generate job both call this."""
        if request.model != "mambo":
            raise BadInputError(f"a {request.model} request cannot run on the MAMBO pipeline")
        return self.generate_many(
            request.height,
            request.width,
            request.options,
            chest_wall=request.chest_wall,
            label=request.label,
            callback=callback,
            cancel=cancel,
        )

    def __call__(
        self, height: int | None = None, width: int | None = None, options: SamplingOptions = DEFAULT_OPTIONS, **kw: Any
    ) -> MamboResult:
        """One image (``options`` holds its one seed); the keywords (chest_wall, callback, cancel) are
        :meth:`generate_many`'s, which makes several images in lock-step."""
        if len(options.seeds) != 1:
            raise BadInputError(f"one image takes one seed, got {len(options.seeds)}: use generate_many")
        return self.generate_many(height, width, options, **kw)[0]

    def generate_many(
        self,
        height: int | None = None,
        width: int | None = None,
        options: SamplingOptions = DEFAULT_OPTIONS,
        *,
        chest_wall: ChestWall = "left",
        label: str | None = None,
        callback: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> list[MamboResult]:
        """One image per seed of ``options`` (of class ``label`` on class-conditional bundles), denoised in
        lock-step: their tiles share every batch (a wave
        holds its tiles of every image), so small waves fill the device. Image i equals a single run with
        seeds[i] up to batched-arithmetic bits. The results share one stats object (images = len(seeds))."""
        height = self.native_size[0] if height is None else height
        width = self.native_size[1] if width is None else width
        plan = self.plan(height, width)
        if chest_wall not in ("left", "right"):
            raise BadInputError(f"chest_wall must be 'left' or 'right', got {chest_wall!r}")
        spec = self.spec(options, label)
        n = options.steps
        weights = {"global": n, "local": plan.local_grid.n * n, "patch": plan.patch_grid.n * n}
        reporter = Reporter(callback, cancel, stage_weights=weights)
        reporter.check_cancel()
        stats = MamboStats(options.sampler, n, options.stitching, images=len(options.seeds))
        t0 = time.perf_counter()
        # 1. stage 1: the global images, s x s, from pure noise
        globals_, stats.stages["global"] = self.generate_global_batch(spec, reporter)
        # 2. stage 2: local contexts conditioned on the global image, stitched into the mid image
        mids, stats.stages["local"] = self.generate_mid_batch(globals_, plan, spec, reporter)
        # 3. stage 3: full-resolution patches conditioned on mid crops + global, stitched
        fulls, stats.stages["patch"] = self.generate_full_batch(globals_, mids, plan, spec, reporter)
        # 4. models see the breast facing left; mirror for a chest wall on the right
        if chest_wall == "right":
            fulls = [np.ascontiguousarray(f[:, ::-1]) for f in fulls]
        stats.seconds = time.perf_counter() - t0
        return [MamboResult(f, g, m, stats, plan) for f, g, m in zip(fulls, globals_, mids, strict=True)]

    def spec(self, options: SamplingOptions, label: str | None = None) -> SamplerSpec:
        """The request's options and class on this bundle's noise schedule (built once per request, passed
        to every stage)."""
        return SamplerSpec(options, self.schedule, self.class_index(label))

    def class_index(self, label: str | None) -> int | None:
        """BadInputError for a class the bundle does not have (or any class, for a classless bundle)."""
        if label is None:
            return None
        if not self.classes:
            raise BadInputError(f"bundle {self.name} is not class-conditional: leave class unset")
        if label not in self.classes:
            raise BadInputError(f"unknown class {label!r}; bundle {self.name} has {', '.join(self.classes)}")
        return self.classes.index(label)

    # ---- stages (images in [0, 1], breast facing left) -------------------------------------------------

    def generate_mid(
        self, global_image: np.ndarray, plan: MamboPlan, spec: SamplerSpec, reporter: Reporter | None = None
    ) -> tuple[np.ndarray, StageStats]:
        """Stage 2 for one seed: the mid-resolution region (local grid height x width) conditioned on a global image."""
        images, stats = self.generate_mid_batch([global_image], plan, spec, reporter)
        return images[0], stats

    def generate_full(
        self,
        global_image: np.ndarray,
        mid_image: np.ndarray,
        plan: MamboPlan,
        spec: SamplerSpec,
        reporter: Reporter | None = None,
    ) -> tuple[np.ndarray, StageStats]:
        """Stage 3 for one seed: the H x W image from a global image and a mid image (at the mid canvas' top-left)."""
        images, stats = self.generate_full_batch([global_image], [mid_image], plan, spec, reporter)
        return images[0], stats

    def generate_global_batch(
        self, spec: SamplerSpec, reporter: Reporter | None = None
    ) -> tuple[list[np.ndarray], StageStats]:
        """Stage 1, one s x s image of the whole (padded) breast per seed of ``spec.options``."""
        reporter = reporter or Reporter()
        seeds = spec.options.seeds
        s, t0, calls = self.geometry.s, time.perf_counter(), CallStats()
        x0 = denoise(
            unet_predictor(
                self.global_unet, None, spec.options.max_batch, calls, spec.label, spec.options.guidance_scale
            ),
            spec,
            (len(seeds), 1, s, s),
            [tile_generator(seed, "global", 0) for seed in seeds],
            device=self.device,
            on_step=lambda n, total: reporter.step("global", n, total),
        )
        reporter.finish_stage("global")
        stats = StageStats(tiles=len(seeds), batches=1, seconds=time.perf_counter() - t0)
        stats.model_evaluations, stats.sequential_calls = calls.model_evaluations, calls.sequential_calls
        return [self._to_image(x[0]) for x in x0], stats

    def generate_mid_batch(
        self,
        global_images: Sequence[np.ndarray],
        plan: MamboPlan,
        spec: SamplerSpec,
        reporter: Reporter | None = None,
    ) -> tuple[list[np.ndarray], StageStats]:
        """Stage 2 for every seed of ``spec.options`` (one global image each), in lock-step."""
        reporter = reporter or Reporter()
        seeds = self._seeds_for(global_images, spec)
        skip = spec.options.skip_background
        s = self.geometry.s
        gs = [self._to_model(g, (s, s), "global_image") for g in global_images]
        grid = plan.local_grid
        regions, stats = denoise_grids(
            self.local_unet,
            spec,
            grid,
            [partial(local_conditioning, g, plan=plan) for g in gs],
            seeds=seeds,
            stage="local",
            actives=[self._active_tiles(grid, g, plan.mid_side // s, skip) for g in global_images],
            device=self.device,
            on_step=lambda n, total: reporter.step("local", n, total),
        )
        reporter.finish_stage("local")
        return [self._to_image(r[0]) for r in regions], stats

    def generate_full_batch(
        self,
        global_images: Sequence[np.ndarray],
        mid_images: Sequence[np.ndarray],
        plan: MamboPlan,
        spec: SamplerSpec,
        reporter: Reporter | None = None,
    ) -> tuple[list[np.ndarray], StageStats]:
        """Stage 3 for every seed of ``spec.options`` (one global and one mid image each), in lock-step."""
        reporter = reporter or Reporter()
        seeds = self._seeds_for(global_images, spec)
        skip = spec.options.skip_background
        s, k = self.geometry.s, self.geometry.k
        gs = [self._to_model(g, (s, s), "global_image") for g in global_images]
        mid_canvases = [to_canvas(self._check_mid(m, plan), plan.mid_side) for m in mid_images]
        grid = plan.patch_grid
        regions, stats = denoise_grids(
            self.patch_unet,
            spec,
            grid,
            [partial(_patch_condition, m, g, plan) for m, g in zip(mid_canvases, gs, strict=True)],
            seeds=seeds,
            stage="patch",
            actives=[self._active_tiles(grid, self._to_image(m), k, skip) for m in mid_canvases],
            device=self.device,
            on_step=lambda n, total: reporter.step("patch", n, total),
        )
        reporter.finish_stage("patch")
        return [self._to_image(r[0, : plan.height, : plan.width]) for r in regions], stats

    def _check_mid(self, mid_image: np.ndarray, plan: MamboPlan) -> torch.Tensor:
        mid = np.asarray(mid_image, dtype=np.float32)
        if mid.ndim != 2 or mid.shape[0] > plan.mid_side or mid.shape[1] > plan.mid_side:
            raise BadInputError(f"mid_image must be 2-D and at most {plan.mid_side} px a side, got {mid.shape}")
        return self._to_model(mid, mid.shape, "mid_image")

    # ---- helpers -------------------------------------------------------------------------------------------

    @staticmethod
    def _seeds_for(images: Sequence[np.ndarray], spec: SamplerSpec) -> list[int]:
        if len(images) != len(spec.options.seeds):
            raise BadInputError(f"{len(images)} image(s) for {len(spec.options.seeds)} seed(s): give one seed each")
        return list(spec.options.seeds)

    @staticmethod
    def _active_tiles(grid: TileGrid, previous: np.ndarray, factor: int, skip: bool) -> np.ndarray:
        """(rows, cols) bool: tiles whose box (seen at the previous stage's resolution) touches the breast.

        An empty mask (nothing breast-like found) skips nothing: a failed mask must not blank the image.
        """
        active = np.ones((grid.rows, grid.cols), bool)
        if not skip:
            return active
        mask = breast_mask(previous)
        if not mask.any():
            return active
        for i, j in grid.raster():
            active[i, j] = bool(mask[grid.box(i, j).scaled_down(factor).slices].any())
        return active

    def _to_model(self, image: np.ndarray | torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(image, dtype=np.float32))
        if tuple(t.shape) != tuple(shape):
            raise BadInputError(f"{name} must be {shape[0]}x{shape[1]}, got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise BadInputError(f"{name} contains NaN or infinite values")
        return IntensityMapping.to_model(t.clamp(0.0, 1.0)).to(self.device)

    def _to_image(self, x: torch.Tensor) -> np.ndarray:
        return IntensityMapping.from_model(x.float()).cpu().numpy().astype(np.float32)


class OnMambo:
    """A pipeline that runs a real image through a MAMBO pipeline's networks (super-resolution, anomaly
    maps): built on one, or from a bundle through the one loader, ``MamboPipeline.from_bundle``."""

    def __init__(self, mambo: MamboPipeline) -> None:
        self.mambo = mambo

    @classmethod
    def from_bundle(cls, bundle: BundleRef, device: Device = "cpu", dtype: torch.dtype = torch.float32) -> Self:
        return cls(MamboPipeline.from_bundle(bundle, device, dtype))


def _patch_condition(mid_canvas: torch.Tensor, global_image: torch.Tensor, plan: MamboPlan, box: Box) -> torch.Tensor:
    return patch_conditioning(mid_canvas, global_image, box, plan)


def random_mambo_networks(
    preset: str, sample_size: int, seed: int = 0, context_channels: int = 2
) -> dict[str, UNet2DModel]:
    """Random-weight global/local/patch networks of a preset (smoke tests, benchmarks, demos)."""
    from models.unet import build_unet

    torch.manual_seed(seed)
    return {
        "global": build_unet(preset, 1, 1, sample_size),
        "local": build_unet(preset, 1 + context_channels, 1, sample_size),
        "patch": build_unet(preset, 1 + context_channels, 1, sample_size),
    }
