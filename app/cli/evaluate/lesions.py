"""``mammogen evaluate lesions``: the closed loop of lesion insertion, measured on held-out phantoms.

Every held-out lesion phantom case (fixed seeds from ``training.lesions.EVAL_FIRST_SEED``: the lesion
network trains on seeds from 100_000, the healthy demo networks on 0..255) is drawn at the bundle's native
size, both views (CC and MLO; each seed draws its laterality). Its real lesions (kind, centre, diameter)
are inserted into the same view's healthy twin, so each inserted lesion has a real twin at the same
place in the same tissue. Then, with one rule for both (``models.metrics.lesions``):

(a) contrast (mean change inside the mask against the healthy input) and size (equivalent diameter of
    the half-maximum changed area) of the inserted lesion beside its real twin's;
(b) the project's anomaly map (``models.anomaly``, the service's settings unless told otherwise) on the
    edited and on the real lesion view: pooled pixel AUROC/AUPRC and per-view IoU against the returned
    masks and against the real masks (masses; calcification pixels left out as in ``evaluate anomaly``);
(c) patch KID of inserted-lesion crops against real-lesion crops of the other half of the cases, beside
    real against real (the floor) and lesion-free healthy crops against real (no insertion at all);
(d) edge energy on the edit region's blend ring against the same ring elsewhere in the same breast, on
    the edited, the real-lesion and the healthy view.

Writes ``report.md``, ``report.json``, ``lesions.csv`` (one row per lesion) and the pictures
``examples.png`` (input | edited | mask overlay | 4x difference) and ``examples-zoom.png`` (the same
around single lesions, with the real phantom lesion and its 4x difference beside). ``--quick`` runs a
couple of cases with few steps: it proves the command, it measures nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from app.cli.common import add_sampling_arguments, sampling_options

MASS_KINDS = ("mass", "spiculated_mass")
#: The anomaly maps' sampler and steps here: the service's lambda, seeds and threshold, but DDIM 50 (the
#: service's default DDPM 1000 takes ~80 s a map on one CPU core, 128 maps would take hours).
ANOMALY_SAMPLING = ("ddim", 50)


@dataclass(frozen=True)
class LesionEvalPlan:
    """How much the loop measures (QUICK_LESION_PLAN only proves the command runs)."""

    cases: int = 32
    patch_size: int = 128
    example_views: int = 4
    zoom_per_kind: int = 3
    max_rings: int = 16


QUICK_LESION_PLAN = LesionEvalPlan(cases=2, patch_size=32, example_views=2, zoom_per_kind=1, max_rings=4)


def configure(parser: argparse.ArgumentParser) -> None:
    from models.options import SAMPLERS
    from training.lesions import EVAL_FIRST_SEED

    parser.add_argument("--bundle", type=Path, default=None, help="MAMBO bundle with a lesion network")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md/json, lesions.csv, pictures")
    parser.add_argument("--cases", type=int, default=None, help="lesion phantom cases (2 views each; default 32)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=EVAL_FIRST_SEED,
        help=f"first phantom seed (default {EVAL_FIRST_SEED}: the held-out block; tune on another, e.g. 800000)",
    )
    parser.add_argument("--quick", action="store_true", help="2 cases, few steps: proves the command, measures nothing")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="the phantom's own lesions as the insertion: what a perfect inserter scores",
    )
    add_sampling_arguments(parser, kind="insertion", stitching=False, steps_help="insertion sampler steps")
    parser.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance of insertion")
    parser.add_argument("--anomaly-lambda", type=int, default=None, help="anomaly noise level (default: the service's)")
    parser.add_argument(
        "--anomaly-seeds", type=int, default=None, help="anomaly reconstructions (default: the service's, 3)"
    )
    parser.add_argument(
        "--anomaly-sampler",
        default=None,
        choices=SAMPLERS,
        help=f"anomaly sampler (default {ANOMALY_SAMPLING[0]}: the service's DDPM 1000 costs 20x, past the budget)",
    )
    parser.add_argument(
        "--anomaly-steps", type=int, default=None, help=f"anomaly sampler steps (default {ANOMALY_SAMPLING[1]})"
    )
    parser.add_argument("--patch-size", type=int, default=None, help="side of the lesion crops for KID (default 128)")
    parser.add_argument(
        "--extractor",
        default="auto",
        choices=("auto", "inception", "pixels"),
        help="KID features: the FID Inception (auto: when installed) or 32x32 pixels",
    )
    parser.add_argument("--device", default=None)


# -- one view ---------------------------------------------------------------------------------------


@dataclass
class ViewOutcome:
    """What one phantom view contributed: per-lesion rows, crops, anomaly cases, pictures."""

    name: str
    lesions: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    crops: list[dict[str, Any]] = field(default_factory=list)
    real_case: Any = None
    inserted_case: Any = None
    picture: dict[str, np.ndarray] | None = None
    insert_seconds: float = 0.0
    anomaly_seconds: float = 0.0


def measure_view(
    inserter: Any,
    anomaly: Any,
    case: Any,
    view: Any,
    view_index: int,
    case_index: int,
    options: Any,
    anomaly_config: Any,
    plan: LesionEvalPlan,
    keep_picture: bool,
    oracle: bool = False,
) -> ViewOutcome:
    """Insert the view's real lesions into its healthy twin and measure (a), (b) inputs, (c) crops, (d)."""
    from app.cli.evaluate.anomaly import Case
    from models.errors import BadInputError
    from models.lesion_spec import LesionSpec, grow
    from models.metrics.lesions import border_ring, centred_crop, lesion_change, ring_positions, ring_seam
    from training.lesions import view_lesion_masks

    name = f"{case.case_id}-{case.laterality}-{view.view}"
    out = ViewOutcome(name)
    info = SimpleNamespace(laterality=case.laterality, dataset=None)
    shape = view.image.shape
    real_masks = view_lesion_masks(view)
    specs = [LesionSpec(les.kind, les.center, les.diameter_px) for les in view.lesions]
    ok: list[int] = []
    prep = inserter.prepare(view.healthy, info)
    for j, spec in enumerate(specs):
        try:
            inserter.check(view.healthy, [spec], info, prep)
            ok.append(j)
        except BadInputError as exc:
            out.skipped.append({"view": name, "kind": spec.kind, "diameter_px": spec.diameter_px, "reason": str(exc)})
    if not ok:
        return out
    t0 = time.perf_counter()
    seed = case.seed * 2 + view_index  # fixed per view: never chosen for the result
    if oracle:  # the perfect inserter: the phantom's own lesions, with the masks and regions insertion returns
        result = oracle_result(view, [specs[j] for j in ok])
    else:
        result = inserter(view.healthy, [specs[j] for j in ok], replace(options, seeds=(seed,)), info=info)
    out.insert_seconds = time.perf_counter() - t0
    regions = [spec.edit_region(shape) for spec in specs]
    every_region = np.zeros(shape, bool)
    for r in regions:
        every_region |= r
    # rings elsewhere: inside the breast (skin line eroded away), clear of every lesion of the view
    from scipy import ndimage

    breast_inner = ndimage.binary_erosion(view.breast_mask, iterations=6)
    allowed = breast_inner & ~grow(every_region, 2.0)
    for n, j in enumerate(ok):
        spec, real_mask, region = specs[j], real_masks[j], regions[j]
        mask = result.masks[n]
        ins = lesion_change(result.image, view.healthy, mask, region)
        real = lesion_change(view.image, view.healthy, real_mask, region) if real_mask.any() else None
        others = every_region & ~region
        # only the ring's tissue: where it crosses the skin line or another lesion, that edge is no seam
        ring = border_ring(region, spec.blend_px(), 2.0) & ~others & breast_inner
        shifts = ring_positions(ring, allowed, plan.max_rings)
        images = {"inserted": result.image, "real": view.image, "healthy": view.healthy}
        seams = {which: ring_seam(img, ring, shifts) for which, img in images.items()}
        les = view.lesions[j]
        rec = result.records[n]
        out.lesions.append(
            {
                "view": name,
                "case": case_index,
                "seed": case.seed,
                "laterality": case.laterality,
                "projection": view.view,
                "kind": spec.kind,
                "center": [round(spec.center[0], 1), round(spec.center[1], 1)],
                "diameter_px": spec.diameter_px,
                "scale": rec["scale"],
                "phantom_contrast_parameter": les.contrast,
                "real": real.to_dict() if real is not None else None,
                "inserted": ins.to_dict(),
                "inserted_contrast_in_real_mask": float((result.image - view.healthy)[real_mask].mean())
                if real_mask.any()
                else float("nan"),
                "seam": {k: v.to_dict() for k, v in seams.items()},
            }
        )
        size = plan.patch_size
        out.crops.append(
            {
                "case": case_index,
                "kind": spec.kind,
                "real": centred_crop(view.image, spec.center, size),
                "inserted": centred_crop(result.image, spec.center, size),
                "healthy": centred_crop(view.healthy, spec.center, size),
                "mask": centred_crop(mask, spec.center, size),
                "region": centred_crop(region, spec.center, size),
            }
        )
    # (b): the anomaly map of the edited view and of the real lesion view, same settings
    masses = [n for n, j in enumerate(ok) if specs[j].kind in MASS_KINDS]
    if masses:
        t0 = time.perf_counter()
        skipped_px = np.zeros(shape, bool)
        for j in set(range(len(specs))) - set(ok):
            skipped_px |= real_masks[j]
        sets = {
            "real": (view.image, [real_masks[ok[n]] for n in range(len(ok))]),
            "inserted": (result.image, list(result.masks)),
        }
        for which, (image, masks) in sets.items():
            target, ignore = np.zeros(shape, bool), skipped_px.copy()
            for n, m in enumerate(masks):
                if n in masses:
                    target |= m
                else:
                    ignore |= m
            ignore &= ~target
            res = anomaly(image, anomaly_config, info=info)
            # not needed for the figures: dropped so a hundred maps stay small in memory
            res.reconstruction = res.preprocessed = np.zeros((0, 0), np.float32)
            c = Case(name, image, view.healthy, case.laterality, target, view.breast_mask, ignore, res)
            setattr(out, f"{which}_case", c)
        out.anomaly_seconds = time.perf_counter() - t0
    if keep_picture:
        out.picture = {
            "healthy": view.healthy,
            "edited": result.image,
            "real": view.image,
            "mask": result.union,
            "region": result.edited,
        }
    return out


def oracle_result(view: Any, specs: list[Any]) -> Any:
    """What a perfect inserter would return: the real lesion view (every figure then measures the metric,
    not a model), with the asked masks and edit regions."""
    from models.lesion_insertion import InsertionResult

    shape = view.image.shape
    edited = np.zeros(shape, bool)
    for spec in specs:
        edited |= spec.edit_region(shape)
    records = [{**spec.to_dict(), "index": n, "scale": "oracle"} for n, spec in enumerate(specs)]
    return InsertionResult(view.image.copy(), [spec.lesion_mask(shape) for spec in specs], edited, records)


# -- the figures -------------------------------------------------------------------------------------


def contrast_and_size(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """(a) by kind: distributions of contrast and size, real and inserted, and the paired ratios."""
    from models.metrics.lesions import summarize

    out: dict[str, Any] = {}
    groups = {k: [r for r in rows if r["kind"] == k] for k in sorted({r["kind"] for r in rows})}
    groups["all masses"] = [r for r in rows if r["kind"] in MASS_KINDS]
    for kind, rs in groups.items():
        rs = [r for r in rs if r["real"] is not None]
        if not rs:
            continue
        real_c = [r["real"]["contrast"] for r in rs]
        ins_c = [r["inserted"]["contrast"] for r in rs]
        lo, hi = np.percentile(real_c, [5, 95]) if len(real_c) > 1 else (real_c[0], real_c[0])
        within = float(np.mean([(lo <= c <= hi) for c in ins_c]))
        out[kind] = {
            "lesions": len(rs),
            "real_contrast": summarize(real_c),
            "inserted_contrast": summarize(ins_c),
            "inserted_contrast_in_real_mask": summarize([r["inserted_contrast_in_real_mask"] for r in rs]),
            "paired_contrast_ratio": summarize([i / c for i, c in zip(ins_c, real_c, strict=True) if c > 0]),
            # the same pixels for both (the real lesion's mask): 1 for a perfect inserter, whatever the mask shape
            "paired_contrast_ratio_in_real_mask": summarize(
                [r["inserted_contrast_in_real_mask"] / r["real"]["contrast"] for r in rs if r["real"]["contrast"] > 0]
            ),
            "inserted_contrast_within_real_p5_p95": within,
            "asked_diameter": summarize([r["diameter_px"] for r in rs]),
            "real_mask_diameter": summarize([r["real"]["mask_diameter_px"] for r in rs]),
            "real_changed_diameter": summarize([r["real"]["changed_diameter_px"] for r in rs]),
            "inserted_changed_diameter": summarize([r["inserted"]["changed_diameter_px"] for r in rs]),
            "paired_size_ratio": summarize(
                [
                    r["inserted"]["changed_diameter_px"] / r["real"]["changed_diameter_px"]
                    for r in rs
                    if r["real"]["changed_diameter_px"] > 0
                ]
            ),
            "inserted_peak": summarize([r["inserted"]["peak"] for r in rs]),
            "real_peak": summarize([r["real"]["peak"] for r in rs]),
        }
    return out


def detection(real: list[Any], inserted: list[Any]) -> dict[str, Any]:
    """(b) the anomaly-map figures for the real and the inserted lesions (masses), one protocol."""
    from app.cli.evaluate.anomaly import evaluate_cases
    from models.metrics.segmentation import pixel_auroc

    out: dict[str, Any] = {}
    for which, cases in (("real", real), ("inserted", inserted)):
        if not cases:
            continue
        rep = evaluate_cases(cases, [], [], fixed_threshold=0.1, percentile=99.0, n_buckets=3)
        regions = [c.breast & ~c.ignore for c in cases]
        out[which] = {
            "views": len(cases),
            "auroc": rep["pooled"]["auroc"],
            "auprc": rep["pooled"]["auprc"],
            "lesion_pixels_in_search_region": rep["pooled"]["lesion_pixels_inside_search_region"],
            "iou_otsu": rep["modes"]["otsu"]["mean_iou"],
            "dice_otsu": rep["modes"]["otsu"]["mean_dice"],
            "iou_oracle_best_dice": rep["modes"]["oracle_best_dice"]["mean_iou"],
            "oracle_threshold": rep["modes"]["oracle_best_dice"]["threshold"],
            "raw_intensity_auroc": pixel_auroc([c.image for c in cases], [c.target for c in cases], regions),
            "per_view_iou_otsu": {
                name: next(s["iou"] for s in scores if s["threshold_mode"] == "otsu")
                for name, scores in rep["per_image"].items()
            },
        }
    return out


def patch_kid(crops: list[dict[str, Any]], extractor: Any) -> dict[str, Any]:
    """(c) KID of lesion crops, split into two halves by case (even | odd): inserted of one half against
    real of the other (both ways, averaged), real against real (the floor), healthy against real."""
    from models.metrics.kid import kernel_inception_distance

    def kid(a: np.ndarray, b: np.ndarray) -> float:
        if len(a) < 2 or len(b) < 2:
            return float("nan")
        return kernel_inception_distance(a, b, subsets=100, subset_size=1000, seed=0).mean

    out: dict[str, Any] = {"extractor": extractor.identity, "patch_size": int(crops[0]["real"].shape[0])}
    every = {k: extractor.extract([c[k] for c in crops]) for k in ("real", "inserted", "healthy")}  # once
    case_half = np.array([c["case"] % 2 for c in crops], int)
    is_mass = np.array([c["kind"] in MASS_KINDS for c in crops], bool)
    for group, keep in (("all kinds", np.ones(len(crops), bool)), ("masses", is_mass)):
        feats = {k: f[keep] for k, f in every.items()}
        a, b = case_half[keep] == 0, case_half[keep] == 1
        real_a, real_b = feats["real"][a], feats["real"][b]
        out[group] = {
            "patches": [int(a.sum()), int(b.sum())],
            "inserted_vs_real": float(np.mean([kid(real_a, feats["inserted"][b]), kid(real_b, feats["inserted"][a])])),
            "real_vs_real_floor": kid(real_a, real_b),
            "healthy_vs_real": float(np.mean([kid(real_a, feats["healthy"][b]), kid(real_b, feats["healthy"][a])])),
        }
    return out


def seam_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """(d) the ring ratios: inserted, the real lesion at the same ring, the healthy input at the same ring."""
    from models.metrics.lesions import summarize

    out: dict[str, Any] = {}
    groups = {k: [r for r in rows if r["kind"] == k] for k in sorted({r["kind"] for r in rows})}
    groups["all"] = rows
    for kind, rs in groups.items():
        out[kind] = {
            which: summarize([r["seam"][which]["ratio"] for r in rs]) for which in ("inserted", "real", "healthy")
        }
        # per lesion, against the same ring on the same tissue before the edit: the location effect cancels
        for which in ("inserted", "real"):
            out[kind][f"paired_{which}_over_healthy"] = summarize(
                [
                    r["seam"][which]["ratio"] / r["seam"]["healthy"]["ratio"]
                    for r in rs
                    if r["seam"]["healthy"]["ratio"] > 0
                ]
            )
        out[kind]["lesions_without_a_comparison_ring"] = sum(r["seam"]["inserted"]["elsewhere"] == 0 for r in rs)
    return out


# -- pictures ----------------------------------------------------------------------------------------


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    m = np.asarray(mask, bool)
    return m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), border_value=0)


def overlay_masks(image: np.ndarray, mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The edited image in gray with the returned mask outlined green and the edit region's border yellow."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1).astype(np.float32)
    rgb[_outline(region)] = (1.0, 1.0, 0.0)
    rgb[_outline(mask)] = (0.0, 1.0, 0.0)
    return rgb


def difference(after: np.ndarray, before: np.ndarray, gain: float = 4.0) -> np.ndarray:
    return np.clip(0.5 + gain * (np.asarray(after, np.float32) - before), 0.0, 1.0)


def example_sheet(pictures: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Rows of input | edited | mask overlay | 4x difference (half size)."""
    from app.cli.evaluate.gates import grid, resize

    tiles = []
    for p in pictures:
        h = max(1, p["healthy"].shape[0] // 2)
        healthy, edited = resize(p["healthy"], h), resize(p["edited"], h)
        mask, region = (resize(p[k].astype(np.float32), h) > 0.3 for k in ("mask", "region"))
        # outlines drawn at the sheet's size, so they stay one pixel wide and visible
        tiles += [healthy, edited, overlay_masks(edited, mask, region), difference(edited, healthy)]
    return grid(tiles, 4, gap=3)


def zoom_sheet(crops: list[dict[str, Any]], per_kind: int) -> np.ndarray | None:
    """Rows around single lesions: input | edited | overlay | 4x difference | real lesion | its 4x difference."""
    from app.cli.evaluate.gates import grid

    chosen: list[dict[str, Any]] = []
    for kind in ("mass", "spiculated_mass", "calcifications"):
        chosen += [c for c in crops if c["kind"] == kind][:per_kind]
    if not chosen:
        return None
    tiles = []
    for c in chosen:
        tiles += [
            c["healthy"],
            c["inserted"],
            overlay_masks(c["inserted"], c["mask"], c["region"]),
            difference(c["inserted"], c["healthy"]),
            c["real"],
            difference(c["real"], c["healthy"]),
        ]
    return grid(tiles, 6, gap=3)


# -- report ------------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 3) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def _dist(s: dict[str, float], digits: int = 3) -> str:
    return f"{_f(s['median'], digits)} [{_f(s['q25'], digits)}, {_f(s['q75'], digits)}]"


def format_report(report: dict[str, Any]) -> str:
    h = report["header"]
    lines = [f"## Lesion insertion, closed loop on held-out phantoms — {h['bundle']}", ""]
    lines += [f"- {k}: {v}" for k, v in h["settings"].items()]
    lines += ["", "### (a) Contrast and size, inserted vs the real phantom lesion at the same place", ""]
    lines += [
        "Median [quartiles]. Contrast: mean change inside the mask against the healthy input (image units, 0-1), "
        "each lesion in its own mask (inserted: the returned disc; real: the phantom's core), and the inserted "
        "change inside the real lesion's mask (the same pixels); size: equivalent diameter (px) of the "
        "half-maximum changed area.",
        "",
        "| Kind | Lesions | Real contrast | Inserted contrast | Paired ratio | Paired ratio, real mask | "
        "Inserted within real 5-95 % | Real size | Inserted size | Paired size ratio | Asked diameter |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, a in report["contrast_size"].items():
        lines.append(
            f"| {kind} | {a['lesions']} | {_dist(a['real_contrast'])} | {_dist(a['inserted_contrast'])} | "
            f"{_dist(a['paired_contrast_ratio'])} | {_dist(a['paired_contrast_ratio_in_real_mask'])} | "
            f"{a['inserted_contrast_within_real_p5_p95']:.0%} | "
            f"{_dist(a['real_changed_diameter'])} | {_dist(a['inserted_changed_diameter'])} | "
            f"{_dist(a['paired_size_ratio'])} | {_dist(a['asked_diameter'])} |"
        )
    lines += ["", "### (b) Does the project's anomaly map find them? (masses)", ""]
    lines += [
        "| Lesions | Views | Pixel AUROC | AUPRC | IoU (per-view Otsu, the service's) | IoU (best-Dice threshold on "
        "these views, oracle) | Raw-intensity AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for which, b in report["anomaly"].items():
        lines.append(
            f"| {which} | {b['views']} | {_f(b['auroc'])} | {_f(b['auprc'])} | {_f(b['iou_otsu'])} | "
            f"{_f(b['iou_oracle_best_dice'])} | {_f(b['raw_intensity_auroc'])} |"
        )
    k = report["kid"]
    lines += ["", f"### (c) Patch KID ({k['patch_size']} px crops centred on each lesion; {k['extractor']})", ""]
    lines += [
        "Cases split in halves (even | odd): each set is compared with the real lesions of the OTHER half, "
        "so no pair shares its tissue.",
        "",
        "| Crops | Patches per half | Inserted vs real | Real vs real (floor) | Healthy (no lesion) vs real |",
        "|---|---|---|---|---|",
    ]
    for group in ("all kinds", "masses"):
        g = k.get(group)
        if g:
            lines.append(
                f"| {group} | {g['patches'][0]} / {g['patches'][1]} | {_f(g['inserted_vs_real'], 4)} | "
                f"{_f(g['real_vs_real_floor'], 4)} | {_f(g['healthy_vs_real'], 4)} |"
            )
    lines += ["", "### (d) Seams: edge energy on the blend ring / the same ring elsewhere in the breast", ""]
    lines += [
        "Median [quartiles]; about 1: the edit border looks like any other tissue. The same ring on the real "
        "lesion view and on the healthy input beside it.",
        "",
        "| Kind | Inserted | Real lesion | Healthy input | Inserted / healthy, paired | Real / healthy, paired | "
        "Rings without a comparison |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, d in report["seams"].items():
        lines.append(
            f"| {kind} | {_dist(d['inserted'])} | {_dist(d['real'])} | {_dist(d['healthy'])} | "
            f"{_dist(d['paired_inserted_over_healthy'])} | {_dist(d['paired_real_over_healthy'])} | "
            f"{d['lesions_without_a_comparison_ring']} |"
        )
    if report["skipped"]:
        lines += ["", f"Lesions not inserted ({len(report['skipped'])}):", ""]
        lines += [f"- {s['view']} {s['kind']} {s['diameter_px']:.0f} px: {s['reason']}" for s in report["skipped"]]
    lines += ["", f"Seconds: {report['seconds']}", ""]
    return "\n".join(lines)


CSV_COLUMNS = (
    "view",
    "kind",
    "row",
    "col",
    "diameter_px",
    "scale",
    "real_contrast",
    "inserted_contrast",
    "real_changed_diameter",
    "inserted_changed_diameter",
    "seam_inserted",
    "seam_real",
    "seam_healthy",
)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from models.imaging.files import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        real = r["real"] or {}
        w.writerow(
            [
                r["view"],
                r["kind"],
                *r["center"],
                round(r["diameter_px"], 2),
                r["scale"],
                real.get("contrast"),
                r["inserted"]["contrast"],
                real.get("changed_diameter_px"),
                r["inserted"]["changed_diameter_px"],
                r["seam"]["inserted"]["ratio"],
                r["seam"]["real"]["ratio"],
                r["seam"]["healthy"]["ratio"],
            ]
        )
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


# -- the command -------------------------------------------------------------------------------------


def _extractor(choice: str) -> Any:
    from app.cli.evaluate.gates import _extractor as auto
    from models.metrics.features import PixelExtractor, load_inception

    if choice == "pixels":
        return PixelExtractor(size=32)
    if choice == "inception":
        return load_inception()
    return auto()


def log(message: str) -> None:
    print(f"evaluate lesions: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from app.cli.evaluate.gates import service_defaults
    from app.cli.superres import require_bundle
    from app.settings import get_settings
    from models.anomaly import AnomalyPipeline
    from models.bundle import load_bundle
    from models.devices import resolve_device
    from models.errors import BadInputError
    from models.imaging.files import atomic_write, json_default, write_png8
    from models.lesion_insertion import LesionInserter
    from models.mambo import MamboPipeline
    from training.lesions import EVAL_FIRST_SEED, TRAIN_FIRST_SEED
    from training.phantoms import make_phantom_case

    t_start = time.perf_counter()
    plan = QUICK_LESION_PLAN if args.quick else LesionEvalPlan()
    plan = replace(plan, cases=args.cases or plan.cases, patch_size=args.patch_size or plan.patch_size)
    if plan.cases < 2:
        raise BadInputError("--cases must be at least 2 (KID compares two halves of the cases)")
    if TRAIN_FIRST_SEED <= args.first_seed < TRAIN_FIRST_SEED + 100_000:
        raise BadInputError(f"--first-seed {args.first_seed} lies in the lesion training block ({TRAIN_FIRST_SEED}..)")
    settings = get_settings()
    bundle = load_bundle(require_bundle(args.bundle or settings.bundle_path("mambo")))
    mambo = MamboPipeline.from_bundle(bundle, device=resolve_device(args.device or settings.device))
    inserter = LesionInserter(mambo)
    anomaly = AnomalyPipeline(mambo)
    size = mambo.native_size
    if plan.patch_size > min(size):
        raise BadInputError(f"--patch-size {plan.patch_size} does not fit the {size[0]}x{size[1]} images")
    options = sampling_options(args, (0,))  # the insertion job's defaults (models.options.SAMPLING_DEFAULTS)
    if args.quick:
        options = replace(options, steps=min(options.steps, 4))
    if args.guidance_scale is not None:
        options = replace(options, guidance_scale=args.guidance_scale)
    cfg = service_defaults()["anomaly"]
    service_sampler = f"{cfg.options.sampler} {cfg.options.steps}"
    n_seeds = args.anomaly_seeds or (1 if args.quick else len(cfg.options.seeds))
    a_sampler = args.anomaly_sampler or ANOMALY_SAMPLING[0]
    a_steps = args.anomaly_steps or (5 if args.quick else ANOMALY_SAMPLING[1])
    cfg = replace(cfg, lam=args.anomaly_lambda or cfg.lam)
    a_options = replace(cfg.options, sampler=a_sampler, seeds=tuple(range(n_seeds)), steps=a_steps)
    cfg = replace(cfg, options=a_options)
    extractor = _extractor("pixels" if args.quick and args.extractor == "auto" else args.extractor)
    weights = "RANDOM weights" if bundle.random_weights else "trained weights"
    bundle_desc = f"{bundle.name} {bundle.version} ({weights})"
    held_out = "held-out evaluation block" if args.first_seed == EVAL_FIRST_SEED else "NOT the held-out block"
    header = {
        "bundle": ("ORACLE insertion (the phantom's own lesions), " if args.oracle else "") + bundle_desc,
        "settings": {
            "bundle": f"{bundle_desc} at {bundle.path}",
            "lesion network": f"classes {', '.join(inserter.kinds)}, conditioning {mambo.lesion_conditioning}",
            "phantom cases": f"{plan.cases} (seeds {args.first_seed}..{args.first_seed + plan.cases - 1}, "
            f"{held_out}), CC and MLO, {size[0]}x{size[1]}, lesion plans of the phantoms' own lesion cases",
            "insertion": "ORACLE: the phantom's own lesions (no model)"
            if args.oracle
            else f"{options.sampler} {options.steps} steps, guidance scale {options.guidance_scale:g}, "
            "seed 2 x phantom seed + view (0 CC, 1 MLO)",
            "anomaly map": f"lambda {cfg.lam}, {cfg.options.sampler} {cfg.options.steps} steps, "
            f"{len(cfg.options.seeds)} seeds, {cfg.resolution} resolution, {cfg.post.residual} residual, "
            f"per-image {cfg.threshold_mode} threshold (the service's lambda, seeds and threshold; its sampler is "
            f"{service_sampler})",
            "KID features": extractor.identity,
            "quick": bool(args.quick),
        },
    }
    outcomes: list[ViewOutcome] = []
    for i in range(plan.cases):
        case = make_phantom_case(args.first_seed + i, size, lesions=True)
        for v, view in enumerate(case.views):
            keep = len([o for o in outcomes if o.picture is not None]) < plan.example_views
            o = measure_view(inserter, anomaly, case, view, v, i, options, cfg, plan, keep, args.oracle)
            outcomes.append(o)
            log(f"{len(outcomes)}/{2 * plan.cases} {o.name}: {len(o.lesions)} lesions, {len(o.skipped)} skipped")
    rows = [r for o in outcomes for r in o.lesions]
    crops = [c for o in outcomes for c in o.crops]
    if not rows:
        raise BadInputError("no lesion of these phantoms could be inserted (see the reasons above)")
    t_kid = time.perf_counter()
    report: dict[str, Any] = {
        "header": header,
        "plan": asdict(plan),
        "contrast_size": contrast_and_size(rows),
        "anomaly": detection(
            [o.real_case for o in outcomes if o.real_case is not None],
            [o.inserted_case for o in outcomes if o.inserted_case is not None],
        ),
        "kid": patch_kid(crops, extractor),
        "seams": seam_summary(rows),
        "skipped": [s for o in outcomes for s in o.skipped],
        "views": len(outcomes),
        "lateralities": {lat: sum(o.name.split("-")[2] == lat for o in outcomes) for lat in ("L", "R")},
        "lesions": rows,
    }
    report["seconds"] = {
        "insertion": round(sum(o.insert_seconds for o in outcomes), 1),
        "anomaly_maps": round(sum(o.anomaly_seconds for o in outcomes), 1),
        "kid": round(time.perf_counter() - t_kid, 1),
        "total": round(time.perf_counter() - t_start, 1),
    }
    text = format_report(report)
    print(text)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.md", lambda f: f.write(text.encode()))
    payload = json.dumps(report, indent=2, default=json_default) + "\n"
    atomic_write(out / "report.json", lambda f: f.write(payload.encode()))
    write_csv(out / "lesions.csv", rows)
    pictures = [o.picture for o in outcomes if o.picture is not None]
    if pictures:
        write_png8(out / "examples.png", example_sheet(pictures))
    zoom = zoom_sheet(crops, plan.zoom_per_kind)
    if zoom is not None:
        write_png8(out / "examples-zoom.png", zoom)
    return 0
