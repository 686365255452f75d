"""Segmentation metrics for anomaly maps: per-image IoU/Dice, pooled AUROC/AUPRC, thresholds, lesion sizes.

Written here rather than borrowed because the published anomaly-DDPM evaluation code swaps
TP/FN/FP, and because every figure must say which threshold mode made
it: fixed, per-image Otsu, healthy-calibrated percentile, best Dice on a validation split, or the
test-set oracle (an upper bound only). Numbers from different modes are not comparable.

Conventions, unit-tested on tiny arrays:
- a pixel is predicted positive when ``score > threshold`` (strictly; Otsu on a constant map
  returns the constant, which must give an empty mask);
- IoU and Dice of two empty masks are 1.0 (perfect agreement), of one empty mask 0.0;
- AUROC/AUPRC pool every pixel of every image (threshold-free) and are NaN when only one
  class is present, since they are undefined there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata

MapOrMaps = np.ndarray | Sequence[np.ndarray]
ThresholdMode = Literal["fixed", "otsu", "percentile", "best_dice_val", "oracle_best_dice", "threshold_free"]

#: Labels printed next to every figure, so no number travels without the protocol that made it.
MODE_LABELS: dict[str, str] = {
    "fixed": "fixed threshold",
    "otsu": "per-image Otsu",
    "percentile": "healthy-calibrated percentile",
    "best_dice_val": "best-Dice threshold from a validation split",
    "oracle_best_dice": "best-Dice threshold on the test set (oracle upper bound)",
    "threshold_free": "threshold-free (pooled pixels)",
}


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int


def _as_bool(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be a boolean or 0/1 mask")
        arr = arr.astype(bool)
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")


def confusion(pred: np.ndarray, target: np.ndarray) -> Confusion:
    """Pixel counts; ``pred`` and ``target`` are boolean (or 0/1) masks of the same shape."""
    p, t = _as_bool(pred, "pred"), _as_bool(target, "target")
    _check_same_shape(p, t)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return Confusion(tp=tp, fp=fp, fn=fn, tn=int(p.size) - tp - fp - fn)


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union; 1.0 when both masks are empty."""
    c = confusion(pred, target)
    union = c.tp + c.fp + c.fn
    return 1.0 if union == 0 else c.tp / union


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice (F1) coefficient; 1.0 when both masks are empty."""
    c = confusion(pred, target)
    denom = 2 * c.tp + c.fp + c.fn
    return 1.0 if denom == 0 else 2 * c.tp / denom


# --- threshold-free, pooled ------------------------------------------------------------------


def _pool(scores: MapOrMaps, labels: MapOrMaps, regions: MapOrMaps | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flatten and concatenate maps (optionally only the pixels inside each region, e.g. the breast)."""
    if isinstance(scores, np.ndarray):  # one map, not a list of maps
        scores, labels = [scores], [labels]
        regions = [regions] if regions is not None else None
    score_list, label_list = list(scores), list(labels)
    if len(score_list) != len(label_list):
        raise ValueError("as many score maps as label maps are needed")
    region_list = list(regions) if regions is not None else [None] * len(score_list)
    s_parts, y_parts = [], []
    for s, y, r in zip(score_list, label_list, region_list, strict=True):
        s = np.asarray(s, dtype=np.float64)
        y = _as_bool(y, "labels")
        _check_same_shape(s, y)
        if r is not None:
            r = _as_bool(r, "region")
            _check_same_shape(s, r)
            s, y = s[r], y[r]
        s_parts.append(s.ravel())
        y_parts.append(y.ravel())
    s_all = np.concatenate(s_parts) if s_parts else np.zeros(0)
    y_all = np.concatenate(y_parts) if y_parts else np.zeros(0, dtype=bool)
    if not np.isfinite(s_all).all():
        raise ValueError("scores contain NaN or infinite values")
    return s_all, y_all


def pixel_auroc(scores: MapOrMaps, labels: MapOrMaps, regions: MapOrMaps | None = None) -> float:
    """Pooled pixel AUROC (Mann-Whitney U with average ranks for ties); NaN if one class is absent."""
    s, y = _pool(scores, labels, regions)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # average ranks: a tie between a positive and a negative counts one half
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pixel_auprc(scores: MapOrMaps, labels: MapOrMaps, regions: MapOrMaps | None = None) -> float:
    """Pooled average precision, sum_k (R_k - R_{k-1}) P_k over distinct thresholds; NaN without positives.

    Tied scores enter together (one operating point), so the value does not depend on pixel order.
    """
    s, y = _pool(scores, labels, regions)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # the last index of each run of equal scores is one operating point
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last].astype(np.float64)
    predicted = (last + 1).astype(np.float64)
    precision = tp / predicted
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --- thresholds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    mean_dice: float
    mode: str


def dice_at_thresholds(scores: np.ndarray, target: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Dice of ``scores > t`` against ``target`` for every t, in O(n log n) by sorting once."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = _as_bool(target, "target").ravel()
    _check_same_shape(s, y)
    t = np.asarray(thresholds, dtype=np.float64)
    s_sorted = np.sort(s)
    pos_sorted = np.sort(s[y])
    predicted = s.size - np.searchsorted(s_sorted, t, side="right")
    tp = pos_sorted.size - np.searchsorted(pos_sorted, t, side="right")
    denom = predicted + pos_sorted.size
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom == 0, 1.0, 2.0 * tp / np.maximum(denom, 1))
    return out


def candidate_thresholds(scores: Sequence[np.ndarray], n: int = 101) -> np.ndarray:
    """``n`` evenly spaced thresholds spanning the pooled score range (THOR uses 101)."""
    lo = min(float(np.min(s)) for s in scores)
    hi = max(float(np.max(s)) for s in scores)
    return np.linspace(lo, hi, n)


def best_dice_threshold(
    scores: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    thresholds: np.ndarray | None = None,
    mode: ThresholdMode = "best_dice_val",
) -> ThresholdChoice:
    """The threshold maximising the mean per-image Dice over ``scores``/``targets``.

    Choose it on a validation split (``mode="best_dice_val"``) and apply it to the test split;
    choosing it on the test images themselves is the oracle upper bound and must be labelled so.
    """
    if not scores:
        raise ValueError("best_dice_threshold needs at least one image")
    cands = candidate_thresholds(scores) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    mean = np.mean([dice_at_thresholds(s, t, cands) for s, t in zip(scores, targets, strict=True)], axis=0)
    i = int(np.argmax(mean))
    return ThresholdChoice(threshold=float(cands[i]), mean_dice=float(mean[i]), mode=mode)


# --- per-image scores and the lesion-size table ----------------------------------------------


@dataclass(frozen=True)
class ImageScore:
    name: str
    iou: float
    dice: float
    lesion_area_px: int
    threshold: float | None
    threshold_mode: str


def score_image(name: str, pred: np.ndarray, target: np.ndarray, threshold: float | None, mode: str) -> ImageScore:
    t = _as_bool(target, "target")
    return ImageScore(name, iou(pred, t), dice(pred, t), int(t.sum()), threshold, mode)


@dataclass(frozen=True)
class SizeBucket:
    """One column of the paper's Table 6: images grouped by lesion area, IoU averaged."""

    median_area_px: float
    min_area_px: int
    max_area_px: int
    count: int
    mean_iou: float
    mean_dice: float
    threshold_mode: str

    def to_dict(self) -> dict:
        return asdict(self)


def iou_by_lesion_size(scores: Sequence[ImageScore], n_buckets: int = 6) -> list[SizeBucket]:
    """Group images into ``n_buckets`` of (near) equal counts by lesion area, like the paper's Table 6.

    Areas are exponentially distributed, so equal-count buckets are equal-width on a log scale
    of the quantiles; each bucket reports its median area. Images without a lesion are left out.
    Earlier buckets take the remainder, as in the paper (18, ..., 18, 17).
    """
    with_lesion = sorted((s for s in scores if s.lesion_area_px > 0), key=lambda s: s.lesion_area_px)
    if not with_lesion:
        return []
    modes = {s.threshold_mode for s in with_lesion}
    if len(modes) != 1:
        raise ValueError(f"cannot pool scores from different threshold modes: {sorted(modes)}")
    (mode,) = modes
    buckets = []
    for group in np.array_split(np.arange(len(with_lesion)), min(n_buckets, len(with_lesion))):
        members = [with_lesion[i] for i in group]
        areas = np.array([m.lesion_area_px for m in members])
        buckets.append(
            SizeBucket(
                median_area_px=float(np.median(areas)),
                min_area_px=int(areas.min()),
                max_area_px=int(areas.max()),
                count=len(members),
                mean_iou=float(np.mean([m.iou for m in members])),
                mean_dice=float(np.mean([m.dice for m in members])),
                threshold_mode=mode,
            )
        )
    return buckets


def format_size_table(buckets: Sequence[SizeBucket]) -> str:
    """Table 6 layout: one row of median areas, one of IoU, with the threshold mode in the header."""
    if not buckets:
        return "(no images with lesions)"
    mode = MODE_LABELS.get(buckets[0].threshold_mode, buckets[0].threshold_mode)
    head = f"IoU by lesion size [{mode}]"
    area = "| Area (px, median) | " + " | ".join(f"{b.median_area_px:g}" for b in buckets) + " |"
    rng = "| Area range | " + " | ".join(f"{b.min_area_px}-{b.max_area_px}" for b in buckets) + " |"
    n = "| Images | " + " | ".join(str(b.count) for b in buckets) + " |"
    sep = "|---|" + "---|" * len(buckets)
    val = "| IoU | " + " | ".join(f"{b.mean_iou:.3f}" for b in buckets) + " |"
    dsc = "| Dice | " + " | ".join(f"{b.mean_dice:.3f}" for b in buckets) + " |"
    return "\n".join([head, "", area, sep, rng, n, val, dsc])
