"""The dual-view paper's evaluation: CC/MLO breast-mask overlap per pair, its Table 1 and Table 2.

For every pair (real or synthetic) each view gets an Otsu breast mask; the pair's IoU and Dice say
how well the two projections of one breast agree in size and shape. The two sets are then compared
as distributions of per-pair values, never pixel by pixel: pixels are not independent, so pixel-level
tests give meaningless p-values.

Guards (docs/DUALVIEW.md, `mammogen evaluate dualview`), each tested:
- percentiles (0.5/99.5) are clipped per image BEFORE Otsu, so a few hot pixels cannot move it;
- the comparison is strict (``image > t``): skimage's Otsu returns the upper edge of the dark class,
  which on a two-level image is the dark level itself, so ``>=`` would mark everything as breast;
- a constant image yields an empty mask, and two empty masks give IoU/Dice = 0/0, which is NaN here
  (a pair whose views show no breast is a failed sample, not a perfect one) and is left out of the
  statistics and counted;
- EMD is ``scipy.stats.wasserstein_distance`` on the per-pair values themselves (no weights: every
  pair counts once), in IoU/Dice units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from models.errors import BadInputError
from models.imaging.mask import breast_mask
from models.intensity import IntensityMapping
from models.metrics import segmentation

#: The paper's percentile clip (0.5th / 99.5th), applied per image before Otsu.
PERCENTILE_CLIP = IntensityMapping(raw_window="percentile", lo_percentile=0.5, hi_percentile=99.5)

#: Plain Otsu (the dual-view paper), not MAMBO's Otsu x 0.175, and no blur: the paper thresholds the
#: image itself. Largest blob and hole filling come with `breast_mask`.
OTSU_FACTOR = 1.0

TABLE1_ROWS = ("mean", "std", "min", "q1", "median", "q3", "max", "iqr")
METRICS = ("iou", "dice")


def view_mask(image: np.ndarray) -> np.ndarray:
    """Boolean Otsu breast mask of one view (any range, background dark), with the §4 guards."""
    clipped = PERCENTILE_CLIP.normalize_raw(np.asarray(image, dtype=np.float32))
    return breast_mask(clipped, otsu_factor=OTSU_FACTOR, blur_fraction=0.0)


def mask_overlap(cc_mask: np.ndarray, mlo_mask: np.ndarray) -> tuple[float, float]:
    """(IoU, Dice) of two view masks; (NaN, NaN) when both are empty.

    The formulas are `models.metrics.segmentation`'s; only the 0/0 case differs on purpose: there two
    empty masks agree perfectly (no lesion, none found), here they mean no breast was found at all.
    """
    if not np.any(cc_mask) and not np.any(mlo_mask):
        return float("nan"), float("nan")
    return segmentation.iou(cc_mask, mlo_mask), segmentation.dice(cc_mask, mlo_mask)


@dataclass(frozen=True)
class PairOverlap:
    """CC/MLO mask agreement of one pair."""

    pair_id: str
    iou: float
    dice: float
    cc_area: float  # mask fraction of the image
    mlo_area: float

    @property
    def both_empty(self) -> bool:
        return self.cc_area == 0 and self.mlo_area == 0


def pair_overlap(cc: np.ndarray, mlo: np.ndarray, pair_id: str = "") -> PairOverlap:
    """Masks both views (same size and orientation expected) and compares them."""
    if cc.shape != mlo.shape:
        raise BadInputError(f"pair {pair_id!r}: CC {cc.shape} and MLO {mlo.shape} differ in size")
    m_cc, m_mlo = view_mask(cc), view_mask(mlo)
    return PairOverlap(pair_id, *mask_overlap(m_cc, m_mlo), float(m_cc.mean()), float(m_mlo.mean()))


def describe(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Table 1 of the paper for one set: mean, std, min, Q1, median, Q3, max, IQR.

    NaNs (both masks empty) are dropped. ``std`` is the sample standard deviation (ddof=1) and the
    quartiles interpolate linearly, as pandas' ``describe`` (which the paper's table mirrors) does.
    """
    v = _finite(values)
    if v.size == 0:
        return {k: float("nan") for k in TABLE1_ROWS} | {"n": 0}
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
        "min": float(v.min()),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "max": float(v.max()),
        "iqr": float(q3 - q1),
    }


Values = Sequence[float] | np.ndarray


def compare_distributions(real: Values, synthetic: Values) -> dict[str, float]:
    """Table 2 of the paper for one metric: two-sample Kolmogorov-Smirnov D and p, and EMD."""
    r, s = _finite(real), _finite(synthetic)
    if r.size == 0 or s.size == 0:
        return {"ks_d": float("nan"), "ks_p": float("nan"), "emd": float("nan")}
    ks = stats.ks_2samp(r, s)
    return {"ks_d": float(ks.statistic), "ks_p": float(ks.pvalue), "emd": float(stats.wasserstein_distance(r, s))}


def bootstrap_ci(
    real: Sequence[float] | np.ndarray,
    synthetic: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile bootstrap CIs of the mean difference, KS D and EMD (both sets resampled)."""
    r, s = _finite(real), _finite(synthetic)
    if r.size == 0 or s.size == 0 or n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"mean_difference": [], "ks_d": [], "emd": []}
    for _ in range(n_boot):
        rb = r[rng.integers(0, r.size, r.size)]
        sb = s[rng.integers(0, s.size, s.size)]
        draws["mean_difference"].append(float(sb.mean() - rb.mean()))
        draws["ks_d"].append(float(stats.ks_2samp(rb, sb).statistic))
        draws["emd"].append(float(stats.wasserstein_distance(rb, sb)))
    tail = (1.0 - level) / 2.0 * 100.0
    return {k: [float(x) for x in np.percentile(v, [tail, 100.0 - tail])] for k, v in draws.items()}


def third_channel_error(rgb: np.ndarray) -> float:
    """Mean |B - |R - G|| of one generated 3 x H x W image in [0, 1]: 0 when the model kept B = |CC - MLO|."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected a 3 x H x W image, got shape {rgb.shape}")
    return float(np.mean(np.abs(rgb[2] - np.abs(rgb[0] - rgb[1]))))


@dataclass
class DualViewReport:
    """Everything `mammogen evaluate dualview` prints and writes as JSON."""

    real: list[PairOverlap]
    synthetic: list[PairOverlap]
    table1: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    table2: dict[str, dict[str, float]] = field(default_factory=dict)
    bootstrap: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null, so the file is strict JSON)."""
        return _jsonable(
            {
                "n_pairs": {"real": len(self.real), "synthetic": len(self.synthetic)},
                "excluded_both_masks_empty": self.excluded,
                "table1": self.table1,
                "table2": self.table2,
                "bootstrap_ci": self.bootstrap,
                "pairs": {
                    "real": [asdict(p) for p in self.real],
                    "synthetic": [asdict(p) for p in self.synthetic],
                },
            }
        )


def evaluate_pairs(
    real: Sequence[PairOverlap], synthetic: Sequence[PairOverlap], *, n_boot: int = 0, seed: int = 0
) -> DualViewReport:
    """Table 1 (per set, plus synthetic-minus-real mean difference) and Table 2 for IoU and Dice."""
    report = DualViewReport(list(real), list(synthetic))
    report.excluded = {
        "real": [p.pair_id for p in real if np.isnan(p.iou)],
        "synthetic": [p.pair_id for p in synthetic if np.isnan(p.iou)],
    }
    for metric in METRICS:
        r = [getattr(p, metric) for p in real]
        s = [getattr(p, metric) for p in synthetic]
        d_real, d_syn = describe(r), describe(s)
        d_syn["mean_difference"] = d_syn["mean"] - d_real["mean"]
        report.table1[metric] = {"real": d_real, "synthetic": d_syn}
        report.table2[metric] = compare_distributions(r, s)
        if n_boot > 0:
            report.bootstrap[metric] = bootstrap_ci(r, s, n_boot=n_boot, seed=seed)
    return report


def format_tables(report: DualViewReport) -> str:
    """The two tables as the paper prints them (plain text)."""
    t1 = report.table1
    head = f"{'Statistic':<26}{'Real IoU':>10}{'Real DSC':>10}{'Synth IoU':>11}{'Synth DSC':>11}"
    lines = ["Table 1 - CC/MLO breast-mask overlap per pair", head, "-" * len(head)]
    labels = {"q1": "Q1 (25%)", "q3": "Q3 (75%)", "iqr": "IQR", "std": "Std"}
    rows = [("n", "N pairs"), ("mean", "Mean"), ("mean_difference", "Mean difference (vs real)")]
    rows += [(k, labels.get(k, k.capitalize())) for k in TABLE1_ROWS[1:]]
    for key, label in rows:
        cells = [t1[m][s].get(key) for s in ("real", "synthetic") for m in METRICS]
        widths = (10, 10, 11, 11)
        lines.append(f"{label:<26}" + "".join(f"{_fmt(c, key):>{w}}" for c, w in zip(cells, widths, strict=True)))
    lines += ["", "Table 2 - real vs synthetic per-pair distributions", f"{'Statistic':<26}{'IoU':>10}{'DSC':>10}"]
    lines.append("-" * 46)
    for key, label in (("ks_d", "KS D"), ("ks_p", "KS p-value"), ("emd", "EMD")):
        fmt = "{:>10.3g}" if key == "ks_p" else "{:>10.3f}"
        lines.append(f"{label:<26}" + "".join(fmt.format(report.table2[m][key]) for m in METRICS))
    for metric, cis in report.bootstrap.items():
        for key, (lo, hi) in cis.items():
            lines.append(f"{metric} {key} 95% CI: [{lo:.3f}, {hi:.3f}]")
    return "\n".join(lines)


def _fmt(value: float | int | None, key: str) -> str:
    if value is None:
        return "N/A"
    if key == "n":
        return str(int(value))
    return "nan" if np.isnan(value) else f"{value:.3f}"


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
