"""The quality gates of a demo bundle, each computed on phantoms the training never saw.

A gate is a few checks (figure, limit, pass/fail) plus the contact sheets it was computed from, so a
person can look at what the number says. Every gate samples with the service's own defaults (read
from the API's request schemas), at the bundle's native size. Reference phantoms come from seed
blocks far above any training seed (``REFERENCE_SEED``); two disjoint blocks give the
phantom-vs-phantom baselines (area range, KID) so a figure is judged against real variation.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from models.imaging.files import write_png8

#: First seed of the held-out phantoms; training uses seeds from 0 (the demo: 0..cases-1).
REFERENCE_SEED = 1_000_000
#: Seed blocks within the reference range (each gate and role draws its own cases).
BLOCK = 10_000


@dataclass(frozen=True)
class Check:
    name: str
    figure: float
    limit: str  # e.g. ">= 0.9"
    passed: bool
    note: str = ""


@dataclass
class GateResult:
    gate: str
    checks: list[Check]
    details: dict[str, Any] = field(default_factory=dict)
    sheets: list[str] = field(default_factory=list)
    seconds: float = 0.0
    showcase: np.ndarray | None = None  # one representative [0, 1] image for the README strip

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("showcase")
        return {**d, "passed": self.passed}


@dataclass(frozen=True)
class GradingPlan:
    """How many cases each gate uses (the issue's numbers; QUICK_PLAN only proves the command runs)."""

    stage1_samples: int = 64
    full_images: int = 16
    superres_images: int = 8
    superres_scale: int = 4
    anomaly_lesions: int = 20
    anomaly_validation: int = 10
    anomaly_healthy: int = 6
    dualview_pairs: int = 64
    patch_size: int = 128
    patches_per_image: int = 4
    conditioning_images: int = 4


QUICK_PLAN = GradingPlan(
    stage1_samples=4,
    full_images=2,
    superres_images=1,
    anomaly_lesions=2,
    anomaly_validation=1,
    anomaly_healthy=1,
    dualview_pairs=4,
    patch_size=32,
    patches_per_image=2,
    conditioning_images=2,
)


def ge(name: str, figure: float, limit: float, note: str = "") -> Check:
    return Check(name, float(figure), f">= {limit:g}", bool(np.isfinite(figure) and figure >= limit), note)


def le(name: str, figure: float, limit: float, note: str = "") -> Check:
    return Check(name, float(figure), f"<= {limit:g}", bool(np.isfinite(figure) and figure <= limit), note)


# -- service defaults and reference data ------------------------------------------------------------


def service_defaults() -> dict[str, Any]:
    """The typed requests the API builds when a client sends nothing but a seed: what users get."""
    from app.api.schemas import AnomalyMapParams, GenerateRequest, SuperResolveParams

    return {
        "generate": GenerateRequest(seed=0).build_request(),
        "dualview": GenerateRequest(model="dualview", seed=0).build_request(),
        "superres": SuperResolveParams(seed=0).build_request(),
        "anomaly": AnomalyMapParams(seed=0).build_request(),
    }


def reference_views(first_seed: int, count: int, size: tuple[int, int]) -> list[Any]:
    """Held-out healthy phantom views (CC and MLO of ``count`` cases), preprocessed like training data."""
    from training.demo import phantom_images

    images = phantom_images(count, first_seed, size)
    return [images.get(i) for i in range(len(images))]


def global_region(image: np.ndarray, plan: Any) -> np.ndarray:
    """A [0, 1] canonical image as stage 1 sees it: block-averaged canvas, cropped to the image's region."""
    from models.geometry import area_downsample, to_canvas

    canvas = to_canvas(torch.from_numpy(np.ascontiguousarray(image, np.float32)), plan.canvas, fill=0.0)
    g = area_downsample(canvas, plan.global_factor).numpy()
    return crop_global(g, plan)


def crop_global(g: np.ndarray, plan: Any) -> np.ndarray:
    s = plan.geometry.s
    gh, gw = max(1, round(plan.height * s / plan.canvas)), max(1, round(plan.width * s / plan.canvas))
    return g[:gh, :gw]


# -- contact sheets ----------------------------------------------------------------------------------


def grid(images: Sequence[np.ndarray], columns: int, marks: Sequence[bool] | None = None, gap: int = 2) -> np.ndarray:
    """RGB grid of [0, 1] images (gray or RGB, same size); a True mark draws a red frame (a failure)."""
    tiles = [np.repeat(i[..., None], 3, axis=-1) if i.ndim == 2 else i for i in images]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 0.25, np.float32)
    for n, t in enumerate(tiles):
        t = np.clip(t, 0, 1).astype(np.float32).copy()
        if marks is not None and marks[n]:
            t[:2], t[-2:], t[:, :2], t[:, -2:] = (1, 0, 0), (1, 0, 0), (1, 0, 0), (1, 0, 0)
        y, x = (n // columns) * (h + gap), (n % columns) * (w + gap)
        out[y : y + h, x : x + w] = t
    return out


def resize(image: np.ndarray, height: int) -> np.ndarray:
    """Area/bicubic resize of a [0, 1] gray or RGB image to ``height`` rows, aspect kept."""
    from models.superres import resize_image

    h, w = image.shape[:2]
    size = (height, max(1, round(w * height / h)))
    if image.ndim == 2:
        return resize_image(image, size)
    return np.stack([resize_image(image[..., c], size) for c in range(image.shape[-1])], axis=-1)


def sheet(out: Path, name: str, image: np.ndarray) -> str:
    write_png8(out / name, image)
    return name


# -- the gates ----------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"evaluate demo: {message}", file=sys.stderr, flush=True)


def stage1_gate(pipe: Any, plan: GradingPlan, out: Path, defaults: dict[str, Any]) -> GateResult:
    """Stage 1: one breast against the chest wall on a black background, in >= 90 % of global samples."""
    from models.metrics.silhouette import SilhouetteRule, silhouette

    request = defaults["generate"]
    h, w = pipe.native_size
    geo_plan = pipe.plan(h, w)
    n = plan.stage1_samples
    options = replace(request.options, seeds=tuple(range(n)))
    globals_, _ = pipe.generate_global_batch(pipe.spec(options))
    samples = [crop_global(g, geo_plan) for g in globals_]
    cases = max(1, n // 2)  # two views per case
    area_refs = [global_region(v.image, geo_plan) for v in reference_views(REFERENCE_SEED, cases, (h, w))]
    rule = SilhouetteRule.from_references(area_refs)
    held = [global_region(v.image, geo_plan) for v in reference_views(REFERENCE_SEED + BLOCK, cases, (h, w))]
    failures = [rule.failures(silhouette(s)) for s in samples]
    ok = [not f for f in failures]
    ref_ok = [not rule.failures(silhouette(r)) for r in held]
    reasons: dict[str, int] = {}
    for f in failures:
        for reason in f:
            key = reason.split(" ")[0] if reason[0].isalpha() else "components"
            reasons[key] = reasons.get(key, 0) + 1
    sheets = [
        sheet(out, "stage1-samples.png", grid(samples, 8, [not o for o in ok])),
        sheet(out, "stage1-phantoms.png", grid(held, 8, [not o for o in ref_ok])),
    ]
    checks = [
        ge(
            "one breast against the chest wall on black",
            float(np.mean(ok)),
            0.9,
            f"{sum(ok)}/{n} samples; held-out phantoms {sum(ref_ok)}/{len(held)}",
        )
    ]
    details = {
        "samples": n,
        "passed_samples": int(sum(ok)),
        "phantoms_passing": f"{sum(ref_ok)}/{len(held)}",
        "area_range": list(rule.area_range),
        "failure_kinds": reasons,
        "sampling": f"{options.sampler} {options.steps} steps, seeds 0..{n - 1}",
        "resolution": f"{samples[0].shape[0]}x{samples[0].shape[1]} (global image region)",
    }
    return GateResult("stage 1", checks, details, sheets)


def _extractor() -> Any:
    """The FID Inception when installed (named in the report), else the pixel extractor (also named)."""
    from models.errors import MetricUnavailableError
    from models.metrics.features import PixelExtractor, load_inception

    try:
        return load_inception()
    except MetricUnavailableError:
        return PixelExtractor(size=32)


def _kid(extractor: Any, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    from models.metrics.kid import kernel_inception_distance

    fa, fb = extractor.extract(list(a)), extractor.extract(list(b))
    return kernel_inception_distance(fa, fb, subsets=50, subset_size=max(len(a), len(b))).mean


def _patches(plan: GradingPlan, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> tuple[list, list]:
    from models.metrics.patches import matched_patches

    m = matched_patches(list(a), list(b), per_image=plan.patches_per_image, size=plan.patch_size, seed=0)
    return m.real, m.synthetic


def seam_ratio(image: np.ndarray, geometry: Any) -> float:
    """8-px strip seam ratio over the stage-3 patch and stage-2 local grids, inside the eroded breast."""
    from models.imaging.mask import breast_mask
    from models.metrics.seams import mambo_seam_grids, seam_score

    grids = mambo_seam_grids(*image.shape, s=geometry.s, k=geometry.k, overlap=geometry.overlap)
    rows = sorted({*grids["patch"][0], *grids["local"][0]})
    cols = sorted({*grids["patch"][1], *grids["local"][1]})
    mask = breast_mask(image, erode_px=9)
    return seam_score(image, rows, cols, mask=mask, band=8, margin=8).overall.ratio


def full_gate(pipe: Any, plan: GradingPlan, out: Path, defaults: dict[str, Any]) -> GateResult:
    """Full MAMBO images at the native size: seams and KID against phantoms."""
    request = defaults["generate"]
    h, w = pipe.native_size
    n = plan.full_images
    options = replace(request.options, seeds=tuple(range(n)))
    results = pipe.generate_many(h, w, options)
    images = [r.image for r in results]
    refs = [v.image for v in reference_views(REFERENCE_SEED + 2 * BLOCK, -(-n // 2), (h, w))][:n]
    refs_b = [v.image for v in reference_views(REFERENCE_SEED + 3 * BLOCK, -(-n // 2), (h, w))][:n]
    geometry = pipe.geometry
    gen_seams = [seam_ratio(i, geometry) for i in images]
    ref_seams = [seam_ratio(r, geometry) for r in refs]
    extractor = _extractor()
    kid_whole, kid_whole_pp = _kid(extractor, refs, images), _kid(extractor, refs, refs_b)
    kid_patch = _kid(extractor, *_patches(plan, refs, images))
    kid_patch_pp = _kid(extractor, *_patches(plan, refs, refs_b))
    zoom = [i[h // 3 : h // 3 + 192, :256] for i in images[:4]]
    sheets = [
        sheet(out, "full-images.png", grid([resize(i, h // 2) for i in images], 4)),
        sheet(out, "full-zoom.png", grid(zoom, 4)),
        sheet(out, "full-phantoms.png", grid([resize(r, h // 2) for r in refs[:8]], 4)),
    ]
    note = f"{n} vs {len(refs)} images, {extractor.identity}"
    checks = [
        le("seam ratio (8-px strips), mean", float(np.mean(gen_seams)), 1.3, f"phantoms {np.mean(ref_seams):.3f}"),
        le("KID whole image / phantom-vs-phantom KID", _ratio(kid_whole, kid_whole_pp), 3.0, note),
        le("KID patches / phantom-vs-phantom KID", _ratio(kid_patch, kid_patch_pp), 3.0, note),
    ]
    details = {
        "images": n,
        "size": [h, w],
        "sampling": f"{options.sampler} {options.steps} steps, {options.stitching}, seeds 0..{n - 1}",
        "seam_ratio": {"generated": gen_seams, "phantoms": ref_seams, "max_generated": float(np.max(gen_seams))},
        "kid": {
            "extractor": extractor.identity,
            "whole": kid_whole,
            "whole_phantom_vs_phantom": kid_whole_pp,
            "patch": kid_patch,
            "patch_phantom_vs_phantom": kid_patch_pp,
            "patch_size": plan.patch_size,
            "patches_per_image": plan.patches_per_image,
        },
        "seconds_per_image": results[0].stats.seconds / n,
    }
    return GateResult("full images", checks, details, sheets, showcase=images[0])


def _ratio(a: float, b: float) -> float:
    """a / b, infinite when the baseline is not positive (unbiased KID can be <= 0 for equal sets)."""
    return a / b if b > 0 else float("inf")


def superres_gate(pipe: Any, plan: GradingPlan, out: Path, defaults: dict[str, Any]) -> GateResult:
    """Super-resolution of held-out phantoms: PSNR/SSIM against the original, bicubic beside, spectra."""
    from models.metrics.image_quality import bicubic_upsample, downsample_area, psnr, ssim
    from models.metrics.spectrum import spectrum_distance
    from models.superres import SuperResolutionPipeline
    from training.phantoms import make_phantom_case

    config = replace(defaults["superres"], scale=plan.superres_scale)
    sr = SuperResolutionPipeline(pipe)
    h, w = pipe.native_size
    scale = config.scale
    size = (-(-h // scale) * scale, -(-w // scale) * scale)
    rows: list[dict[str, Any]] = []
    examples = []
    for n in range(plan.superres_images):
        case = make_phantom_case(REFERENCE_SEED + 4 * BLOCK + n, size, lesions=False)
        original = case.cc.image
        low = downsample_area(original, scale)
        result = sr(low, config, info=SimpleNamespace(laterality=case.laterality, dataset=None))
        bicubic = bicubic_upsample(low, original.shape)
        for method, img in (("bicubic", bicubic), ("diffusion", result.image)):
            rows.append(
                {
                    "case": n,
                    "method": method,
                    "psnr_breast": psnr(img, original, mask=case.cc.breast_mask),
                    "ssim": ssim(img, original),
                    "spectrum_high": spectrum_distance(img, original),
                }
            )
        if n < 2:
            nearest = np.kron(low, np.ones((scale, scale), np.float32))
            examples.append(np.concatenate([original, nearest, bicubic, result.image], axis=1))
            y, x = size[0] // 3, size[1] // 4
            crops = [a[y : y + 128, x : x + 128] for a in (original, nearest, bicubic, result.image)]
            examples.append(resize(np.concatenate(crops, axis=1), size[1]))  # as wide as the row above
            if n == 0:
                showcase = np.concatenate([crops[1], crops[3]], axis=1)  # input (nearest) | diffusion
        log(f"super-resolution {n + 1}/{plan.superres_images}")

    def mean(method: str, key: str) -> float:
        return float(np.mean([r[key] for r in rows if r["method"] == method]))

    spec_d, spec_b = mean("diffusion", "spectrum_high"), mean("bicubic", "spectrum_high")
    bicubic_note = f"bicubic {mean('bicubic', 'psnr_breast'):.2f} dB / SSIM {mean('bicubic', 'ssim'):.3f}"
    checks = [
        ge(f"PSNR in breast, {scale}x, dB", mean("diffusion", "psnr_breast"), 30.0, bicubic_note),
        ge(f"SSIM, {scale}x", mean("diffusion", "ssim"), 0.85),
        le(
            "high-frequency spectrum distance, diffusion - bicubic",
            spec_d - spec_b,
            0.0,
            f"diffusion {spec_d:.3f}, bicubic {spec_b:.3f} (mean |log10 power| difference, 0.25-0.5 cycles/px)",
        ),
    ]
    width = 2 * size[1]  # every row of the sheet at the same width (half the original's 4 columns)
    rows_ = [resize(e, max(1, round(e.shape[0] * width / e.shape[1]))) for e in examples]
    sheets = [sheet(out, "superres-examples.png", np.concatenate([r[:, :width] for r in rows_]))]
    details = {
        "images": plan.superres_images,
        "original_size": list(size),
        "sampling": f"{config.options.sampler} {config.options.steps} steps, {config.options.stitching}",
        "rows": rows,
        "columns_of_examples": "original | input (nearest) | bicubic | diffusion; then a zoomed crop",
    }
    return GateResult("super-resolution", checks, details, sheets, showcase=showcase)


def anomaly_gate(pipe: Any, plan: GradingPlan, out: Path, defaults: dict[str, Any]) -> GateResult:
    """Anomaly maps of phantoms with masses: AUROC, IoU at a validation threshold, and raw intensity beside."""
    from app.cli.evaluate.anomaly import evaluate_cases, example_row, make_cases
    from models.anomaly import AnomalyPipeline
    from models.metrics.segmentation import pixel_auroc

    config = defaults["anomaly"]
    anomaly = AnomalyPipeline(pipe)
    size = pipe.native_size
    first = REFERENCE_SEED + 5 * BLOCK
    test = [c for c in make_cases(first, plan.anomaly_lesions * 2, size, True, ("cc",)) if c.target.any()]
    test = test[: plan.anomaly_lesions]
    val = [c for c in make_cases(first + BLOCK, plan.anomaly_validation * 2, size, True, ("cc",)) if c.target.any()]
    val = val[: plan.anomaly_validation]
    healthy = make_cases(first + 2 * BLOCK, plan.anomaly_healthy, size, False, ("cc",))
    for i, c in enumerate(test + val + healthy):
        c.result = anomaly(c.image, config, info=SimpleNamespace(laterality=c.laterality, dataset=None))
        log(f"anomaly {i + 1}/{len(test) + len(val) + len(healthy)}")
    report = evaluate_cases(test, val, healthy, fixed_threshold=0.1, percentile=99.0, n_buckets=3)
    regions = [c.breast & ~c.ignore for c in test]
    raw = pixel_auroc([c.image for c in test], [c.target for c in test], regions)
    heat = report["pooled"]["auroc"]
    iou = report["modes"]["best_dice_val"]["mean_iou"] if "best_dice_val" in report["modes"] else float("nan")
    checks = [
        ge("pixel AUROC", heat, 0.85, f"{len(test)} test views with masses"),
        ge("mean IoU at the validation threshold", iou, 0.2, f"threshold chosen on {len(val)} validation views"),
        ge("heat-map AUROC - raw-intensity AUROC", heat - raw, 0.0, f"raw intensity AUROC {raw:.3f}"),
    ]
    rows = [example_row(c) for c in test[:4]]
    sheets = [sheet(out, "anomaly-examples.png", resize(np.concatenate(rows), 256 * len(rows)))] if rows else []
    details = {
        "test_views": len(test),
        "validation_views": len(val),
        "healthy_views": len(healthy),
        "lambda": config.lam,
        "seeds_per_image": len(config.options.seeds),
        "resolution": config.resolution,
        "sampling": f"{config.options.sampler} {config.options.steps} steps",
        "raw_intensity_auroc": raw,
        "modes": {k: {"threshold": v["threshold"], "mean_iou": v["mean_iou"]} for k, v in report["modes"].items()},
        "columns_of_examples": "input | overlay | truth (red) vs mask (green)",
    }
    showcase = test[0].result.overlay() if test else None
    return GateResult("anomaly maps", checks, details, sheets, showcase=showcase)


def dualview_gate(dv: Any, plan: GradingPlan, out: Path, defaults: dict[str, Any]) -> GateResult:
    """Dual-view pairs: empty/invalid pairs and the pair-IoU distribution against phantom pairs."""
    from models.metrics.dualview_stats import compare_distributions, pair_overlap
    from training.datasets import view_at_size

    request = defaults["dualview"]
    n = plan.dualview_pairs
    options = replace(request.options, seeds=tuple(range(n)))
    result = dv(options)
    synthetic = [pair_overlap(c, m, str(i)) for i, (c, m) in enumerate(zip(result.cc, result.mlo, strict=True))]
    views = reference_views(REFERENCE_SEED + 8 * BLOCK, n, defaults["dualview_phantom_size"])
    size = result.cc[0].shape[0]
    real_pairs = [
        (view_at_size(views[i].image, size).numpy(), view_at_size(views[i + 1].image, size).numpy())
        for i in range(0, len(views) - 1, 2)
    ]
    real = [pair_overlap(c, m, f"phantom-{i}") for i, (c, m) in enumerate(real_pairs)]

    def invalid(p: Any) -> bool:
        return not np.isfinite(p.iou) or min(p.cc_area, p.mlo_area) < 0.02

    bad = [invalid(p) for p in synthetic]
    ks = compare_distributions([p.iou for p in real], [p.iou for p in synthetic])["ks_d"]
    pairs = [np.concatenate([c, m], axis=1) for c, m in zip(result.cc, result.mlo, strict=True)]
    real_rgb = [np.concatenate(p, axis=1) for p in real_pairs[:16]]
    sheets = [
        sheet(out, "dualview-pairs.png", grid(pairs, 8, bad)),
        sheet(out, "dualview-phantoms.png", grid(real_rgb, 8)),
    ]
    checks = [
        le("empty or invalid pairs", float(np.mean(bad)), 0.05, f"{sum(bad)}/{n}"),
        le("KS D of pair IoU vs phantom pairs", ks, 0.3, f"{len(real)} phantom pairs"),
    ]
    details = {
        "pairs": n,
        "sampling": f"{options.sampler} {options.steps} steps",
        "iou_generated_mean": float(np.nanmean([p.iou for p in synthetic])),
        "iou_phantoms_mean": float(np.nanmean([p.iou for p in real])),
    }
    good = [p for p, b in zip(pairs, bad, strict=True) if not b] or pairs
    return GateResult("dual-view", checks, details, sheets, showcase=good[0])


def conditioning_gate(pipe: Any, plan: GradingPlan, out: Path, defaults: dict[str, Any]) -> GateResult:
    """Stages 2 and 3 from pure noise with a real phantom's context: does the output carry the context's
    low frequencies? PSNR of the block-averaged output against the context it was given, beside the
    PSNR a context-blind model would get (another phantom's context against this one)."""
    from models.geometry import area_downsample, to_canvas
    from models.imaging.mask import breast_mask
    from models.metrics.image_quality import psnr

    options = replace(defaults["generate"].options, seeds=(0,))
    spec = pipe.spec(options)
    h, w = pipe.native_size
    geo_plan = pipe.plan(h, w)
    g, lg = pipe.geometry, geo_plan.local_grid
    views = reference_views(REFERENCE_SEED + 9 * BLOCK, -(-plan.conditioning_images // 2), (h, w))
    views = views[: max(2, plan.conditioning_images)]
    contexts = []
    for v in views:
        canvas = to_canvas(torch.from_numpy(np.ascontiguousarray(v.image, np.float32)), geo_plan.canvas, fill=0.0)
        mid = area_downsample(canvas, g.k).numpy()
        contexts.append((area_downsample(canvas, geo_plan.global_factor).numpy(), mid, mid[: lg.height, : lg.width]))
    rows: dict[str, list[float]] = {"stage3": [], "stage3_blind": [], "stage2": [], "stage2_blind": []}
    shown = []
    factor2 = geo_plan.mid_side // g.s
    for i, (glob, mid_canvas, mid) in enumerate(contexts):
        other_glob, other_mid_canvas, _ = contexts[(i + 1) % len(contexts)]
        full, _ = pipe.generate_full(glob, mid, geo_plan, spec)
        low = area_downsample(torch.from_numpy(np.ascontiguousarray(full[: h // g.k * g.k, : w // g.k * g.k])), g.k)
        region = mid_canvas[: low.shape[0], : low.shape[1]]
        mask = breast_mask(region)
        rows["stage3"].append(psnr(low.numpy(), region, mask=mask))
        rows["stage3_blind"].append(psnr(other_mid_canvas[: low.shape[0], : low.shape[1]], region, mask=mask))
        mid_out, _ = pipe.generate_mid(glob, geo_plan, spec)
        mh, mw = mid_out.shape[0] // factor2 * factor2, mid_out.shape[1] // factor2 * factor2
        low2 = area_downsample(torch.from_numpy(np.ascontiguousarray(mid_out[:mh, :mw])), factor2).numpy()
        region2 = glob[: low2.shape[0], : low2.shape[1]]
        mask2 = breast_mask(region2)
        rows["stage2"].append(psnr(low2, region2, mask=mask2))
        rows["stage2_blind"].append(psnr(other_glob[: low2.shape[0], : low2.shape[1]], region2, mask=mask2))
        if i < 2:
            shown.append(np.concatenate([resize(region, h), resize(full, h), resize(low.numpy(), h)], axis=1))
        log(f"conditioning {i + 1}/{len(contexts)}")
    m = {k: float(np.mean(v)) for k, v in rows.items()}
    checks = [
        ge(
            "stage 3 from noise: PSNR of block-averaged output vs its context - context-blind PSNR, dB",
            m["stage3"] - m["stage3_blind"],
            3.0,
            f"{m['stage3']:.2f} dB vs {m['stage3_blind']:.2f} dB",
        ),
        ge(
            "stage 2 from noise: PSNR of block-averaged output vs the global image - context-blind PSNR, dB",
            m["stage2"] - m["stage2_blind"],
            3.0,
            f"{m['stage2']:.2f} dB vs {m['stage2_blind']:.2f} dB",
        ),
    ]
    sheets = [sheet(out, "conditioning.png", np.concatenate(shown))]
    details = {
        "views": len(contexts),
        "psnr_db": m,
        "sampling": f"{options.sampler} {options.steps} steps",
        "columns_of_sheet": "context (mid image) | stage-3 output from noise | output block-averaged",
        "conditioning": g.conditioning,
    }
    return GateResult("conditioning", checks, details, sheets)


GateFn = Callable[[Any, GradingPlan, Path, dict[str, Any]], GateResult]
GATES: dict[str, tuple[str, GateFn]] = {  # name -> (pipeline it needs, function)
    "stage1": ("mambo", stage1_gate),
    "full": ("mambo", full_gate),
    "conditioning": ("mambo", conditioning_gate),
    "superres": ("mambo", superres_gate),
    "anomaly": ("mambo", anomaly_gate),
    "dualview": ("dualview", dualview_gate),
}
