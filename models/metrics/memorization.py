"""Memorization check (paper §4.5, evaluation notes §5): is a generated image a copy of a training image?

For each generated image we find its nearest training image by Pearson correlation of
breast-masked, z-scored, downsampled images (over the intersection of the two breast masks, chest
wall aligned first, so a mirrored copy is still a copy) and, when features are given, by feature
cosine. The same is done for held-out real images, which were never trained on: they show how
close an honest new mammogram gets to the training set. A generated image closer to the training
set than every held-out image (or than the chosen percentile of them) is flagged for a person to
look at, and a Mann–Whitney U test (Meehan et al.'s C_T idea) asks whether generated images as a
whole sit closer to the training set than held-out ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy.stats import mannwhitneyu

from models.errors import BadInputError
from models.imaging.files import atomic_write
from models.imaging.mask import breast_mask
from models.metrics.patches import chest_wall_on_left

#: Without held-out images there is no calibration; this is the copy convention of Akbar et al.
FIXED_CORRELATION_THRESHOLD = 0.95

Rule = Literal["max", "percentile"]


@dataclass(frozen=True)
class MaskedStack:
    """Downsampled images (chest wall left) and their breast masks, flattened: n x size²."""

    values: np.ndarray
    masks: np.ndarray


def downsample_masked(images: Sequence[np.ndarray], size: int = 64) -> MaskedStack:
    values, masks = [], []
    for img in images:
        arr = np.asarray(img, dtype=np.float32)
        mask = breast_mask(arr)
        if not mask.any():
            mask = np.ones_like(mask)
        if not chest_wall_on_left(mask):
            arr, mask = arr[:, ::-1], mask[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(np.stack([arr, mask.astype(np.float32)])))[None]
        small = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        values.append(small[0].numpy().astype(np.float64).ravel())
        masks.append((small[1].numpy() > 0.5).astype(np.float64).ravel())
    if not values:
        return MaskedStack(np.zeros((0, size * size)), np.zeros((0, size * size)))
    return MaskedStack(np.stack(values), np.stack(masks))


def masked_pearson(a: MaskedStack, b: MaskedStack, *, min_overlap: float = 0.25, chunk: int = 256) -> np.ndarray:
    """Pearson correlation of every (a_i, b_j) over the INTERSECTION of their breast masks.

    Pearson z-scores both images over the shared breast region, so brightness and contrast do not
    matter and a skin line that one mask includes and the other does not cannot decorrelate a copy.
    All six sums are matrix products, so n x m correlations cost six GEMMs. Pairs whose masks
    overlap on less than ``min_overlap`` of the smaller breast get -1 (not comparable).
    """
    out = np.empty((a.values.shape[0], b.values.shape[0]))
    mb, xb = b.masks.T, (b.masks * b.values).T
    xb2 = (b.masks * b.values**2).T
    size_b = b.masks.sum(axis=1)[None, :]
    for start in range(0, a.values.shape[0], chunk):
        ma = a.masks[start : start + chunk]
        xa = ma * a.values[start : start + chunk]
        n = ma @ mb
        sx, sy = xa @ mb, ma @ xb
        sxx, syy, sxy = (xa * a.values[start : start + chunk]) @ mb, ma @ xb2, xa @ xb
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = sxy - sx * sy / n
            var = (sxx - sx**2 / n) * (syy - sy**2 / n)
            r = cov / np.sqrt(var)
        smaller = np.minimum(ma.sum(axis=1)[:, None], size_b)
        bad = (n < 3) | (n < min_overlap * smaller) | ~np.isfinite(r)
        out[start : start + chunk] = np.where(bad, -1.0, np.clip(r, -1.0, 1.0))
    return out


def unit_rows(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)


@dataclass(frozen=True)
class Neighbours:
    index: np.ndarray  # nearest reference per query
    similarity: np.ndarray  # its similarity
    second: np.ndarray  # similarity of the second nearest (nan with one reference)


def nearest_neighbours(similarity: np.ndarray) -> Neighbours:
    """Nearest reference per query row of a query x reference similarity matrix."""
    order = np.argsort(-similarity, axis=1)
    rows = np.arange(similarity.shape[0])
    second = similarity[rows, order[:, 1]] if similarity.shape[1] > 1 else np.full(similarity.shape[0], np.nan)
    return Neighbours(index=order[:, 0], similarity=similarity[rows, order[:, 0]], second=second)


@dataclass
class Criterion:
    """One similarity measure (correlation or feature cosine) and its outcome."""

    name: str
    generated: Neighbours
    heldout: Neighbours | None
    threshold: float
    threshold_rule: str
    flagged: np.ndarray  # bool per generated image
    mann_whitney: dict[str, Any] | None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "flagged": np.nonzero(self.flagged)[0].tolist(),
            "flagged_fraction": float(self.flagged.mean()) if self.flagged.size else 0.0,
            "generated_nn_similarity": _describe(self.generated.similarity),
        }
        if self.heldout is not None:
            out["heldout_nn_similarity"] = _describe(self.heldout.similarity)
            # Even without memorization, each generated image beats all n held-out ones with prob. 1/(n+1).
            n_gen, n_held = len(self.generated.similarity), len(self.heldout.similarity)
            out["expected_false_flags_if_max_rule"] = n_gen / (n_held + 1)
        out["mann_whitney"] = self.mann_whitney
        return out


@dataclass
class MemorizationReport:
    criteria: dict[str, Criterion] = field(default_factory=dict)
    generated_names: list[str] = field(default_factory=list)
    train_names: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> np.ndarray:
        flags = [c.flagged for c in self.criteria.values()]
        return np.logical_or.reduce(flags) if flags else np.zeros(0, bool)

    def to_dict(self) -> dict[str, Any]:
        pairs = []
        corr = self.criteria["correlation"]
        for g in range(len(corr.generated.index)):
            pair: dict[str, Any] = {"generated": self._name(self.generated_names, g)}
            for name, c in self.criteria.items():
                pair[name] = {
                    "nearest_train": self._name(self.train_names, int(c.generated.index[g])),
                    "similarity": float(c.generated.similarity[g]),
                    "second_similarity": float(c.generated.second[g]),
                    "flagged": bool(c.flagged[g]),
                }
            pair["flagged"] = bool(self.flagged[g])
            pairs.append(pair)
        return {
            "flagged": [self._name(self.generated_names, int(i)) for i in np.nonzero(self.flagged)[0]],
            "flagged_fraction": float(self.flagged.mean()) if self.flagged.size else 0.0,
            "criteria": {k: c.summary() for k, c in self.criteria.items()},
            "pairs": pairs,
        }

    @staticmethod
    def _name(names: list[str], i: int) -> str | int:
        return names[i] if i < len(names) else i


def _describe(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "p99.9": float(np.percentile(values, 99.9)),
        "max": float(values.max()),
    }


def _criterion(
    name: str,
    gen_vs_train: np.ndarray,
    held_vs_train: np.ndarray | None,
    rule: Rule,
    percentile: float,
    fixed: float | None,
) -> Criterion:
    g = nearest_neighbours(gen_vs_train)
    h = nearest_neighbours(held_vs_train) if held_vs_train is not None and len(held_vs_train) else None
    mw = None
    if h is not None:
        threshold = float(h.similarity.max() if rule == "max" else np.percentile(h.similarity, percentile))
        threshold_rule = "max held-out" if rule == "max" else f"{percentile}th percentile of held-out"
        test = mannwhitneyu(g.similarity, h.similarity, alternative="greater")
        mw = {
            "statistic": float(test.statistic),
            "p_value": float(test.pvalue),
            "auc": float(test.statistic / (len(g.similarity) * len(h.similarity))),
            "alternative": "generated nearer to training than held-out (small p: memorization signal)",
        }
    elif fixed is not None:
        threshold, threshold_rule = fixed, f"fixed {fixed} (no held-out set: uncalibrated)"
    else:
        threshold, threshold_rule = float("inf"), "none (no held-out set)"
    return Criterion(name, g, h, threshold, threshold_rule, g.similarity > threshold, mw)


def check_memorization(
    generated: Sequence[np.ndarray],
    train: Sequence[np.ndarray],
    heldout: Sequence[np.ndarray] | None = None,
    *,
    generated_features: np.ndarray | None = None,
    train_features: np.ndarray | None = None,
    heldout_features: np.ndarray | None = None,
    size: int = 64,
    rule: Rule = "max",
    percentile: float = 99.9,
    generated_names: list[str] | None = None,
    train_names: list[str] | None = None,
) -> MemorizationReport:
    """Nearest training neighbours of generated (and held-out) images, flags and the C_T-style test."""
    if not generated or not train:
        raise BadInputError("the memorization check needs generated and training images")
    report = MemorizationReport(generated_names=generated_names or [], train_names=train_names or [])
    train_stack = downsample_masked(train, size)
    report.criteria["correlation"] = _criterion(
        "correlation",
        masked_pearson(downsample_masked(generated, size), train_stack),
        masked_pearson(downsample_masked(heldout, size), train_stack) if heldout else None,
        rule,
        percentile,
        FIXED_CORRELATION_THRESHOLD,
    )
    if generated_features is not None and train_features is not None:
        train_unit = unit_rows(train_features).T
        report.criteria["feature_cosine"] = _criterion(
            "feature_cosine",
            unit_rows(generated_features) @ train_unit,
            unit_rows(heldout_features) @ train_unit if heldout_features is not None and heldout else None,
            rule,
            percentile,
            None,
        )
    return report


def _chest_wall_left(img: np.ndarray) -> np.ndarray:
    return img if chest_wall_on_left(breast_mask(img)) else img[:, ::-1]


def _fit(text: str, width_px: int) -> str:
    """Keep the end of a label (the file name) within width_px of PIL's default 6-px font."""
    room = max(4, width_px // 6)
    return text if len(text) <= room else "…" + text[-(room - 1) :]


def write_montage(
    path: str | os.PathLike[str],
    generated: Sequence[np.ndarray],
    train: Sequence[np.ndarray],
    report: MemorizationReport,
    *,
    top_k: int = 8,
    tile: int = 160,
) -> Path:
    """PNG of (generated | nearest training) pairs, chest wall left: flagged pairs first (framed in
    red, with the criterion that flagged them), then the most correlated ones, ``top_k`` in all."""
    corr = report.criteria["correlation"]
    flagged = report.flagged
    by_corr = list(np.argsort(-corr.generated.similarity))
    order = ([g for g in by_corr if flagged[g]] + [g for g in by_corr if not flagged[g]])[:top_k]
    label_h, pad = 26, 4
    canvas = Image.new("RGB", (2 * tile + 3 * pad, len(order) * (tile + label_h + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    for row, g in enumerate(order):
        name = next((n for n, c in report.criteria.items() if c.flagged[g]), "correlation")
        crit = report.criteria[name]
        t = int(crit.generated.index[g])
        y = pad + row * (tile + label_h + pad)
        colour = (255, 96, 96) if flagged[g] else (230, 230, 230)
        head = f"{name} {crit.generated.similarity[g]:.3f}" + (" FLAGGED" if flagged[g] else "")
        draw.text((pad, y), _fit(head, 2 * tile), fill=colour)
        names = (
            MemorizationReport._name(report.generated_names, int(g)),
            MemorizationReport._name(report.train_names, t),
        )
        for col, (img, label) in enumerate(zip((generated[g], train[t]), names, strict=True)):
            pixels = np.round(np.clip(_chest_wall_left(np.asarray(img)), 0, 1) * 255).astype(np.uint8)
            thumb = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
            thumb.thumbnail((tile, tile))
            x = pad + col * (tile + pad)
            draw.text((x, y + 12), _fit(("gen " if col == 0 else "train ") + str(label), tile), fill=colour)
            canvas.paste(thumb, (x, y + label_h))
            if flagged[g]:
                box = [x - 2, y + label_h - 2, x + thumb.width + 1, y + label_h + thumb.height + 1]
                draw.rectangle(box, outline="red")
    return atomic_write(path, lambda f: canvas.save(f, format="PNG"))
