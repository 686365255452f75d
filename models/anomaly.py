"""Anomaly-map post-processing: residual -> heat map -> binary mask -> overlay, with no model involved.

Kept apart from the diffusion part (``models/anomaly.py``) so the recipe can be tested on a
"perfect healthy reconstruction" and reused by the evaluation. The steps follow
notes/evaluation.md §1 (the stronger recipe): L1 residual (or the paper's positive part after
histogram matching), averaged over seeds, multiplied by an eroded breast mask (the skin line is
where the diffusion model changes most), median filtered, thresholded, small blobs dropped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from scipy import ndimage
from skimage.exposure import match_histograms
from skimage.filters import threshold_otsu

from models.bundle import Bundle, load_bundle
from models.errors import BadInputError, BundleIntegrityError
from models.geometry import MamboGeometry, area_downsample, crop, patch_conditioning, to_canvas
from models.imaging.mask import breast_mask, drop_small_components
from models.imaging.orientation import Orientation, canonicalize, restore
from models.intensity import DEFAULT_INTENSITY, IntensityMapping
from models.progress import CancelFn, ProgressFn, Reporter
from models.sampling import CallStats, SamplerSpec, denoise, start_index_for_timestep, tile_generator, unet_predictor
from models.schedulers import NOISE_SCHEDULE

ResidualKind = Literal["l1", "positive"]
Ensemble = Literal["mean", "median"]
BinarizeMode = Literal["fixed", "otsu", "percentile"]
BINARIZE_MODES: tuple[str, ...] = ("fixed", "otsu", "percentile")


@dataclass(frozen=True)
class PostProcess:
    """Post-processing parameters, in pixels of the map they are applied to (the model's s x s grid).

    Defaults are the stronger recipe at 256^2; ``PAPER_POST`` is the paper's §3.3 variant.
    """

    residual: ResidualKind = "l1"
    histogram_match: bool = False  # match the reconstruction's breast histogram to the input's first
    ensemble: Ensemble = "mean"
    erode_px: int = 10  # rim removed from the breast mask (the paper's 20 x 20 kernel at 256^2, §9, removes ~10)
    median_size: int = 5
    relative_floor: float = 0.0  # paper: drop changes below 30 % of the map's maximum
    blur_sigma: float = 0.0  # paper: a Gaussian blur at the end
    min_component_px: int = 20

    def scaled(self, factor: float) -> PostProcess:
        """The same recipe on a map ``factor`` times larger per side (areas scale with factor^2)."""
        odd = max(1, round(self.median_size * factor) | 1)
        return PostProcess(
            residual=self.residual,
            histogram_match=self.histogram_match,
            ensemble=self.ensemble,
            erode_px=round(self.erode_px * factor),
            median_size=odd if self.median_size > 1 else 1,
            relative_floor=self.relative_floor,
            blur_sigma=self.blur_sigma * factor,
            min_component_px=round(self.min_component_px * factor * factor),
        )


STRONG_POST = PostProcess()
PAPER_POST = PostProcess(
    residual="positive", histogram_match=True, erode_px=10, median_size=1, relative_floor=0.3, blur_sigma=2.0
)


def _check_2d(name: str, a: np.ndarray) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map, got shape {arr.shape}")
    return arr


def residual_map(
    original: np.ndarray,
    reconstruction: np.ndarray,
    breast: np.ndarray,
    *,
    kind: ResidualKind = "l1",
    histogram_match: bool = False,
) -> np.ndarray:
    """|x - x_hat| (``l1``) or (x - x_hat)+ (``positive``: masses are brighter than tissue), zero outside the breast.

    Histogram matching (paper §3.3) first maps the reconstruction's breast intensities onto the
    input's, so a global brightness drift of the diffusion model is not reported as an anomaly.
    """
    x = _check_2d("original", original).astype(np.float32)
    x_hat = _check_2d("reconstruction", reconstruction).astype(np.float32)
    b = _check_2d("breast mask", breast).astype(bool)
    if kind not in ("l1", "positive"):
        raise ValueError(f"unknown residual kind {kind!r}")
    if not (x.shape == x_hat.shape == b.shape):
        raise ValueError(f"shape mismatch: {x.shape}, {x_hat.shape}, {b.shape}")
    if histogram_match and b.any():
        x_hat = x_hat.copy()
        x_hat[b] = match_histograms(x_hat[b], x[b]).astype(np.float32)
    diff = x - x_hat
    res = np.abs(diff) if kind == "l1" else np.maximum(diff, 0.0)
    return np.where(b, res, 0.0).astype(np.float32)


def combine_residuals(residuals: Sequence[np.ndarray], how: Ensemble = "mean") -> np.ndarray:
    """Average the per-seed maps (the median is more robust to one bad reconstruction)."""
    if len(residuals) == 0:
        raise ValueError("no residual maps to combine")
    stack = np.stack([_check_2d("residual", r) for r in residuals]).astype(np.float32)
    if how == "mean":
        return stack.mean(axis=0)
    if how == "median":
        return np.median(stack, axis=0).astype(np.float32)
    raise ValueError(f"unknown ensemble {how!r}")


def eroded_region(breast: np.ndarray, erode_px: int) -> np.ndarray:
    """The breast mask minus a rim of ``erode_px`` pixels (erosion by a square, outside the image = background).

    Computed as chessboard distance to the background > erode_px: O(pixels) whatever the rim width,
    where a structuring element of a 150-px rim at 3840^2 would take minutes.
    """
    b = _check_2d("breast mask", breast).astype(bool)
    if erode_px <= 0 or not b.any():
        return b
    padded = np.pad(b, 1, constant_values=False)
    dist = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
    return dist > erode_px


def heat_map(residual: np.ndarray, region: np.ndarray, post: PostProcess = STRONG_POST) -> np.ndarray:
    """Residual -> float heat map: zero outside ``region``, median filtered, optional paper floor/blur."""
    r = _check_2d("residual", residual).astype(np.float32)
    reg = _check_2d("region", region).astype(bool)
    heat = np.where(reg, r, 0.0).astype(np.float32)
    if post.median_size > 1:
        heat = ndimage.median_filter(heat, size=post.median_size, mode="constant", cval=0.0)
    if post.relative_floor > 0 and heat.max() > 0:
        heat = np.where(heat >= post.relative_floor * heat.max(), heat, 0.0).astype(np.float32)
    if post.blur_sigma > 0:
        heat = ndimage.gaussian_filter(heat, sigma=post.blur_sigma)
    return np.where(reg, heat, 0.0).astype(np.float32)


def otsu_threshold(heat: np.ndarray, region: np.ndarray) -> float:
    """Per-image Otsu threshold of the heat inside ``region`` (label-free; Wolleb et al.)."""
    values = np.asarray(heat)[np.asarray(region, dtype=bool)]
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return float(values.max()) if values.size else 0.0  # constant map: `>` then selects nothing
    return float(threshold_otsu(values))


def calibrate_percentile(
    healthy_heat: Sequence[np.ndarray], regions: Sequence[np.ndarray], percentile: float = 99.0
) -> float:
    """The threshold that ~(100 - percentile) % of healthy breast pixels exceed (pooled over images).

    Run the same pipeline on healthy images, pass their heat maps and regions here, and use the
    result as ``threshold`` with mode ``percentile``: 99 gives about 1 % pixel false-positive rate.
    """
    if not 0 < percentile < 100:
        raise ValueError("percentile must lie in (0, 100)")
    values = [np.asarray(h)[np.asarray(r, dtype=bool)] for h, r in zip(healthy_heat, regions, strict=True)]
    pooled = np.concatenate(values) if values else np.zeros(0)
    if pooled.size == 0:
        raise ValueError("no healthy breast pixels to calibrate on")
    return float(np.percentile(pooled, percentile))


def binarize(
    heat: np.ndarray,
    region: np.ndarray,
    mode: BinarizeMode,
    threshold: float | None = None,
    min_component_px: int = STRONG_POST.min_component_px,
) -> tuple[np.ndarray, float]:
    """Heat map -> (binary anomaly mask, threshold used): ``heat > t`` inside ``region``, small blobs dropped.

    ``fixed`` and ``percentile`` need ``threshold`` (for ``percentile`` from :func:`calibrate_percentile`);
    ``otsu`` computes it per image.
    """
    h = _check_2d("heat map", heat)
    reg = _check_2d("region", region).astype(bool)
    if mode == "otsu":
        t = otsu_threshold(h, reg)
    elif mode in ("fixed", "percentile"):
        if threshold is None:
            raise ValueError(f"threshold mode {mode!r} needs a threshold")
        t = float(threshold)
    else:
        raise ValueError(f"unknown threshold mode {mode!r}; choose one of {BINARIZE_MODES}")
    binary = (h > t) & reg
    if min_component_px > 1:
        binary = drop_small_components(binary, min_component_px)
    return binary, t


def overlay(image: np.ndarray, heat: np.ndarray, binary: np.ndarray, scale: float | None = None) -> np.ndarray:
    """RGB picture for people: the mammogram in gray, the heat in red, the mask outlined in yellow.

    ``scale`` is the heat value drawn at full strength (default: the map's 99.9th percentile of
    non-zero heat, so a single hot pixel does not wash the rest out).
    """
    img = np.clip(_check_2d("image", image).astype(np.float32), 0.0, 1.0)
    h = _check_2d("heat map", heat).astype(np.float32)
    b = _check_2d("binary mask", binary).astype(bool)
    if scale is None:
        nz = h[h > 0]
        scale = float(np.percentile(nz, 99.9)) if nz.size else 1.0
    alpha = np.clip(h / max(scale, 1e-8), 0.0, 1.0)[..., None] * 0.7
    rgb = np.repeat(img[..., None], 3, axis=-1)
    rgb = (1 - alpha) * rgb + alpha * np.array([1.0, 0.0, 0.0], np.float32)
    edge = b & ~ndimage.binary_erosion(b, structure=np.ones((3, 3), bool), border_value=0)
    rgb[edge] = (1.0, 1.0, 0.0)
    return rgb.astype(np.float32)


# =============================================================================================
# The diffusion part: input -> training preprocessing -> noise to lambda -> healthy denoise
# =============================================================================================

Resolution = Literal["global", "full"]
RESOLUTIONS: tuple[str, ...] = ("global", "full")
#: The map size the post-processing defaults are stated for (paper: the 256^2 global model).
REFERENCE_SIDE = 256
FULL_RES_MAX_MEDIAN = 9


@dataclass(frozen=True)
class AnomalyConfig:
    """One anomaly-map request. Defaults: the paper's lambda = 700 with the stronger recipe (5 seeds, L1).

    ``num_inference_steps`` spaces the sampler over the full 1000-step schedule; denoising starts at
    the first scheduled timestep <= ``lam`` (DDPM with 1000 steps: timesteps lam..0, lam + 1 model calls).
    """

    lam: int = 700
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sampler: str = "ddpm"
    num_inference_steps: int = 1000
    eta: float = 0.0
    post: PostProcess = STRONG_POST
    threshold_mode: BinarizeMode = "otsu"
    threshold: float | None = None
    resolution: Resolution = "global"
    max_batch: int = 16

    def validate(self) -> None:
        """BadInputError for anything a caller could get wrong."""
        if not 0 < int(self.lam) < 1000:
            raise BadInputError(f"lambda must lie in 1..999 (of 1000 timesteps), got {self.lam}")
        if not self.seeds:
            raise BadInputError("at least one seed is needed")
        if self.threshold_mode not in BINARIZE_MODES:
            raise BadInputError(f"threshold mode must be one of {BINARIZE_MODES}, got {self.threshold_mode!r}")
        if self.threshold_mode in ("fixed", "percentile") and self.threshold is None:
            raise BadInputError(f"threshold mode {self.threshold_mode!r} needs --threshold")
        if self.resolution not in RESOLUTIONS:
            raise BadInputError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
        if self.max_batch < 1:
            raise BadInputError("max_batch must be >= 1")
        try:
            self.spec()
        except ValueError as exc:
            raise BadInputError(str(exc)) from exc

    def spec(self, schedule: dict | None = None) -> SamplerSpec:
        return SamplerSpec(self.sampler, int(self.num_inference_steps), float(self.eta), schedule)


@dataclass(frozen=True)
class Prepared:
    """A real input as the models see it (paper §9) and what is needed to map results back to it.

    ``canonical`` is the input with its chest wall on the left, background 0, intensities mapped by
    the bundle's IntensityMapping; ``global_image`` is its canvas block-averaged to s x s, exactly as
    the stage-1 training examples are built (training/datasets.py, through models.geometry).
    ``companions`` went through the same mask, flip and intensity window (e.g. an oracle healthy twin).
    """

    canonical: np.ndarray  # (H, W) float32 [0, 1]
    breast: np.ndarray  # (H, W) bool, canonical orientation
    orientation: Orientation
    canvas: int  # L, the square canvas side (a multiple of k*s)
    global_image: np.ndarray  # (s, s) float32 [0, 1]
    global_breast: np.ndarray  # (s, s) bool
    companions: tuple[np.ndarray, ...] = ()
    companions_global: tuple[np.ndarray, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return self.canonical.shape  # type: ignore[return-value]

    @property
    def global_factor(self) -> int:
        return self.canvas // self.global_image.shape[0]

    def to_input(self, canonical_map: np.ndarray) -> np.ndarray:
        """Undo the orientation step: a canonical (H, W) map -> the input's orientation."""
        return np.ascontiguousarray(restore(canonical_map, self.orientation))

    def global_to_canonical(self, global_map: np.ndarray) -> np.ndarray:
        """An (s, s) map on the global grid -> (H, W) on the canonical input grid (bilinear, then crop)."""
        t = torch.from_numpy(np.ascontiguousarray(global_map, dtype=np.float32))[None, None]
        up = F.interpolate(t, size=(self.canvas, self.canvas), mode="bilinear", align_corners=False)
        h, w = self.shape
        return up[0, 0, :h, :w].numpy()


def validate_image(image: np.ndarray) -> np.ndarray:
    """The checks every model entry point runs first: a finite, non-empty 2-D grayscale image."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise BadInputError(f"expected a 2-D grayscale image, got an array of shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 2:
        raise BadInputError(f"the image is empty ({'x'.join(str(n) for n in arr.shape)} pixels)")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise BadInputError("the image contains NaN or infinite values")
    return arr


def canonicalize_input(
    image: np.ndarray,
    intensity: IntensityMapping = DEFAULT_INTENSITY,
    info: Any = None,
    companions: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, np.ndarray, Orientation, tuple[np.ndarray, ...]]:
    """Paper §9 on a decoded [0, 1] image, through the shared steps training uses (the one breast mask,
    the one orientation rule, the bundle's intensity mapping): mask -> background 0 -> chest wall
    left -> intensity window over the breast.

    Returns (canonical image, canonical breast mask, orientation, canonical companions). Companions
    (same size) share the input's mask, flip and window; the window is taken over all of their
    breast pixels, which for ``minmax`` equals the input's own when companions are no brighter.
    BadInputError when the image is unusable or holds no breast.
    """
    img = validate_image(image)
    comps = [validate_image(c) for c in companions]
    if any(c.shape != img.shape for c in comps):
        raise BadInputError("companion images must have the input's size")
    breast = breast_mask(img)
    if not breast.any():
        raise BadInputError("no breast found in the image (it is blank or constant)")
    _, orientation = canonicalize(img, info, breast)
    stack = [restore(a, orientation) for a in (img, *comps)]  # restore == flip when flipped
    breast = np.ascontiguousarray(restore(breast, orientation))
    joint = np.concatenate(stack, axis=1)
    joint_mask = np.concatenate([breast] * len(stack), axis=1)
    if intensity.raw_window == "bits":  # the reader already scaled by the stored bits
        mapped = np.clip(joint, 0.0, 1.0)
    else:
        mapped = intensity.normalize_raw(joint, mask=joint_mask)
    mapped = np.where(joint_mask, mapped, 0.0).astype(np.float32)
    w = img.shape[1]
    parts = [np.ascontiguousarray(mapped[:, i * w : (i + 1) * w]) for i in range(len(stack))]
    return parts[0], breast, orientation, tuple(parts[1:])


def _global(canonical: np.ndarray, canvas: int, factor: int, fill: float) -> np.ndarray:
    """A canonical [0, 1] map on its canvas, block-averaged to the global grid (the training recipe)."""
    on_canvas = to_canvas(torch.from_numpy(np.ascontiguousarray(canonical, dtype=np.float32)), canvas, fill=fill)
    return area_downsample(on_canvas, factor).numpy().astype(np.float32)


def prepare(
    image: np.ndarray,
    geometry: MamboGeometry,
    intensity: IntensityMapping = DEFAULT_INTENSITY,
    *,
    info: Any = None,
    companions: Sequence[np.ndarray] = (),
) -> Prepared:
    """Canonicalise an input and build its global (stage-1) image the way training does."""
    canonical, breast, orientation, comps = canonicalize_input(image, intensity, info, companions)
    h, w = canonical.shape
    L = geometry.canvas_side(h, w)
    factor = L // geometry.s
    # background is 0 in image range == -1 in model range, so averaging in either range agrees
    return Prepared(
        canonical=canonical,
        breast=breast,
        orientation=orientation,
        canvas=L,
        global_image=_global(canonical, L, factor, 0.0),
        global_breast=_global(breast.astype(np.float32), L, factor, 0.0) >= 0.5,
        companions=comps,
        companions_global=tuple(_global(c, L, factor, 0.0) for c in comps),
    )


@dataclass
class AnomalyResult:
    """Everything in the INPUT's orientation and size, except ``global_*`` (the model's canonical grid)."""

    heatmap: np.ndarray  # (H, W) float32: post-processed residual, 0 outside the eroded breast
    mask: np.ndarray  # (H, W) bool: the binary anomaly mask
    region: np.ndarray  # (H, W) bool: where anomalies are looked for (the eroded breast)
    reconstruction: np.ndarray  # (H, W) float32 [0, 1]: the healthy reconstruction (mean over seeds)
    preprocessed: np.ndarray  # (H, W) float32 [0, 1]: the input as the model saw it
    threshold: float
    threshold_mode: str
    global_heatmap: np.ndarray  # (s, s) canonical
    min_component_px: int = 0  # blobs smaller than this (input pixels) were dropped from ``mask``
    stats: dict[str, Any] = field(default_factory=dict)

    def overlay(self) -> np.ndarray:
        return overlay(self.preprocessed, self.heatmap, self.mask)

    def binarize(self, mode: BinarizeMode, threshold: float | None = None) -> tuple[np.ndarray, float]:
        """The same heat map under another threshold mode (evaluation compares modes on one map)."""
        return binarize(self.heatmap, self.region, mode, threshold, self.min_component_px)


def anomaly_from_reconstructions(
    prep: Prepared,
    reconstructions: Sequence[np.ndarray],
    config: AnomalyConfig = AnomalyConfig(),
    *,
    original: np.ndarray | None = None,
    breast: np.ndarray | None = None,
) -> AnomalyResult:
    """Residuals of healthy reconstructions against the input -> heat map, mask, in the input's frame.

    ``reconstructions`` are images on the global grid (s x s) by default; pass ``original`` and
    ``breast`` on another grid (the canonical full-resolution one) to score reconstructions made
    there. A perfect healthy reconstruction of an image with a lesion must give back the lesion:
    the tests check exactly that.
    """
    post = config.post
    x = prep.global_image if original is None else original
    b = prep.global_breast if breast is None else breast
    on_global = original is None
    # the recipe's pixel sizes are stated for a 256^2 map covering the canvas; scale to this grid
    post_here = post.scaled((x.shape[0] if on_global else prep.canvas) / REFERENCE_SIDE)
    if not on_global:  # a median window of tens of pixels costs minutes and blurs what full resolution adds
        post_here = replace(post_here, median_size=min(post_here.median_size, FULL_RES_MAX_MEDIAN))
    residuals = [
        residual_map(x, r, b, kind=post.residual, histogram_match=post.histogram_match) for r in reconstructions
    ]
    region_here = eroded_region(b, post_here.erode_px)
    heat_here = heat_map(combine_residuals(residuals, post.ensemble), region_here, post_here)
    recon_here = np.mean(np.stack(reconstructions), axis=0).astype(np.float32)
    if on_global:
        heat = np.clip(prep.global_to_canonical(heat_here), 0.0, None)
        recon = prep.global_to_canonical(recon_here)
        factor = prep.global_factor
    else:
        heat, recon, factor = heat_here, recon_here, 1
    # binarise on the input grid, so the mask has full-resolution edges; sizes scale with the grid
    region = eroded_region(prep.breast, post_here.erode_px * factor)
    heat = np.where(region, heat, 0.0).astype(np.float32)
    min_px = post_here.min_component_px * factor**2
    binary, t = binarize(heat, region, config.threshold_mode, config.threshold, min_px)
    return AnomalyResult(
        heatmap=prep.to_input(heat),
        mask=prep.to_input(binary),
        region=prep.to_input(region),
        reconstruction=prep.to_input(np.clip(recon, 0.0, 1.0).astype(np.float32)),
        preprocessed=prep.to_input(prep.canonical),
        threshold=t,
        threshold_mode=config.threshold_mode,
        global_heatmap=heat_here if on_global else np.zeros((0, 0), np.float32),
        min_component_px=min_px,
    )


class AnomalyPipeline:
    """Healthy-model reconstruction of a real image from timestep lambda, scored against the image.

    ``global``: the paper's setting (stage-1 model on the s x s global image). ``full``: every
    native-resolution s x s patch touching the breast is noised to lambda and denoised by the
    stage-3 model, conditioned on the REAL local context and global image; overlapping patch
    reconstructions are averaged. Seeds are batched together (one generator each).
    """

    def __init__(
        self,
        global_unet: UNet2DModel,
        patch_unet: UNet2DModel | None = None,
        schedule: dict[str, Any] | None = None,
        geometry: MamboGeometry | None = None,
        intensity: IntensityMapping = DEFAULT_INTENSITY,
    ) -> None:
        self.global_unet, self.patch_unet = global_unet, patch_unet
        self.schedule = dict(schedule or NOISE_SCHEDULE)
        self.geometry = geometry or MamboGeometry()
        self.intensity = intensity

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle | str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> AnomalyPipeline:
        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if b.kind != "mambo":
            raise BundleIntegrityError(f"bundle {b.path} is a {b.kind} bundle; anomaly maps need a mambo bundle")
        return cls(
            b.load_network("global", device, dtype),
            b.load_network("patch", device, dtype),
            schedule=b.schedule,
            geometry=MamboGeometry.from_dict(b.geometry),
            intensity=b.intensity,
        )

    @property
    def device(self) -> torch.device:
        return self.global_unet.device

    def __call__(
        self,
        image: np.ndarray,
        config: AnomalyConfig = AnomalyConfig(),
        *,
        info: Any = None,
        callback: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> AnomalyResult:
        """Anomaly map of one [0, 1] image (any orientation, any size); results in the input's frame.

        ``info`` (an ImageInfo or DICOM dataset) lets PatientOrientation/laterality decide the flip.
        """
        t0 = time.perf_counter()
        config.validate()
        # 1. preprocess as in training: breast mask, breast facing left, intensity mapping, global image
        prep = prepare(image, self.geometry, self.intensity, info=info)
        reporter = Reporter(callback, cancel, stage_weights={"anomaly": 1.0})
        reporter.check_cancel()
        calls = CallStats()
        # 2-3. forward-noise to lambda, denoise with the healthy model, once per seed
        if config.resolution == "global":
            recons = self.reconstruct_global(prep, config, reporter, calls)
            result = anomaly_from_reconstructions(prep, recons, config)
        else:
            recons = self.reconstruct_full(prep, config, reporter, calls)
            result = anomaly_from_reconstructions(prep, recons, config, original=prep.canonical, breast=prep.breast)
        reporter.finish_stage("anomaly")
        # 4. residual, eroded mask, median filter, threshold, small blobs dropped (in anomaly_from_reconstructions)
        spec = config.spec(self.schedule)
        result.stats = {
            "lambda": int(config.lam),
            "start_timestep": int(spec.scheduler().timesteps[start_index_for_timestep(spec, config.lam)]),
            "seeds": list(config.seeds),
            "sampler": config.sampler,
            "num_inference_steps": int(config.num_inference_steps),
            "resolution": config.resolution,
            "residual": config.post.residual,
            "histogram_match": config.post.histogram_match,
            "threshold_mode": result.threshold_mode,
            "threshold": result.threshold,
            "orientation": prep.orientation.to_dict(),
            "canvas": prep.canvas,
            "model_evaluations": calls.model_evaluations,
            "sequential_calls": calls.sequential_calls,
            "seconds": round(time.perf_counter() - t0, 4),
        }
        return result

    def _start(self, config: AnomalyConfig) -> tuple[SamplerSpec, int]:
        spec = config.spec(self.schedule)
        return spec, start_index_for_timestep(spec, int(config.lam))

    def reconstruct_global(
        self, prep: Prepared, config: AnomalyConfig, reporter: Reporter | None = None, calls: CallStats | None = None
    ) -> list[np.ndarray]:
        """One healthy reconstruction (s x s, [0, 1]) of the global image per seed."""
        reporter = reporter or Reporter()
        spec, start = self._start(config)
        s = prep.global_image.shape[0]
        x0 = torch.from_numpy(IntensityMapping.to_model(prep.global_image))[None, None]
        n = len(config.seeds)
        out = denoise(
            unet_predictor(self.global_unet, None, config.max_batch, calls),
            spec,
            (n, 1, s, s),
            [tile_generator(seed, "anomaly-global", 0) for seed in config.seeds],
            device=self.device,
            init_x0=x0.expand(n, 1, s, s),
            start_step=start,
            on_step=lambda k, total: reporter.step("anomaly", k, total),
        )
        return [IntensityMapping.from_model(o[0].float()).cpu().numpy().astype(np.float32) for o in out]

    def reconstruct_full(
        self, prep: Prepared, config: AnomalyConfig, reporter: Reporter | None = None, calls: CallStats | None = None
    ) -> list[np.ndarray]:
        """One healthy reconstruction (H x W, [0, 1]) per seed from stage-3 patches with real context."""
        if self.patch_unet is None:
            raise BadInputError("full-resolution anomaly maps need the bundle's stage-3 (patch) network")
        reporter = reporter or Reporter()
        h, w = prep.shape
        s, k = self.geometry.s, self.geometry.k
        if h < s or w < s:
            raise BadInputError(f"full-resolution anomaly maps need an image of at least {s}x{s}, got {h}x{w}")
        plan = self.geometry.plan(h, w)
        spec, start = self._start(config)
        full = to_canvas(torch.from_numpy(IntensityMapping.to_model(prep.canonical)), plan.canvas)
        mid = area_downsample(full, k)
        g = torch.from_numpy(IntensityMapping.to_model(prep.global_image))
        grid = plan.patch_grid
        tiles = [(i, j) for i, j in grid.raster() if prep.breast[grid.box(i, j).slices].any()]
        jobs = [(seed_i, t) for seed_i in range(len(config.seeds)) for t in tiles]
        chunks = [jobs[a : a + config.max_batch] for a in range(0, len(jobs), config.max_batch)]
        steps = len(spec.scheduler().timesteps) - start
        total = max(len(chunks) * steps, 1)
        acc = torch.zeros(len(config.seeds), grid.height, grid.width)
        weight = torch.zeros(grid.height, grid.width)
        for c, chunk in enumerate(chunks):
            boxes = [grid.box(*t) for _, t in chunk]
            cond = torch.stack([patch_conditioning(mid, g, b, plan) for b in boxes])
            x0 = denoise(
                unet_predictor(self.patch_unet, cond.to(self.device), config.max_batch, calls),
                spec,
                (len(chunk), 1, s, s),
                [tile_generator(config.seeds[si], "anomaly-patch", grid.index(*t)) for si, t in chunk],
                device=self.device,
                init_x0=torch.stack([crop(full, b) for b in boxes])[:, None],
                start_step=start,
                on_step=lambda n, _t, done=c * steps: reporter.step("anomaly", done + n, total),
            )
            for (si, _), b, tile in zip(chunk, boxes, x0.float().cpu(), strict=True):
                acc[si][b.slices] += tile[0]
                if si == 0:
                    weight[b.slices] += 1.0
        covered = weight > 0
        recons = []
        for si in range(len(config.seeds)):
            r = torch.where(covered, acc[si] / weight.clamp(min=1.0), torch.full_like(weight, -1.0))
            recons.append(IntensityMapping.from_model(r[:h, :w]).numpy().astype(np.float32))
        return recons
