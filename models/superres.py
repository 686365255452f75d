"""Super-resolution of a real mammogram with MAMBO stages 2-3 (paper §4.4).

A low-resolution image, preprocessed by the chain the bundle's training images went through
(models/preprocess.py with the manifest's PreprocessConfig: breast mask, chest wall left, intensity
mapping), stands in for what stage 1 would have generated: the global image, and -- when it is
already about as fine as the mid-resolution image (scale <= 1.5 k) -- the mid image too, so only
stage 3 runs. Stages 2-3 add the detail through :class:`models.mambo.MamboPipeline`'s stage
methods, with any sampler and stitching mode. The output has the input's orientation.

    sr = SuperResolutionPipeline.from_bundle("models/demo_bundles/demo-mambo")
    result = sr(low_res, SuperResConfig(scale=16))
    result.image  # float32 (16 h) x (16 w) in [0, 1], chest wall on the input's side
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.geometry import MamboPlan
from models.imaging.orientation import Orientation
from models.mambo import OnMambo
from models.preprocess import preprocess_image, validate_image
from models.progress import CancelFn, ProgressFn, Reporter
from models.requests import SuperResConfig

DEFAULT_CONFIG = SuperResConfig()
#: ``auto`` uses the input as the mid image when it is at most this many times coarser than mid.
MID_STAND_IN_RATIO = 1.5


@dataclass
class SuperResResult:
    image: np.ndarray  # float32 (H, W): the input's frame, orientation, polarity and intensity window
    normalized: np.ndarray  # float32 (H, W) in [0, 1]: the same in the model's intensity mapping
    global_image: np.ndarray  # (s, s) [0, 1], canonical: the input standing in for stage 1
    mid_image: np.ndarray  # mid-resolution region [0, 1], canonical: the input (mid) or stage 2's output
    stand_in: str  # "global" (stages 2 + 3 ran) or "mid" (stage 3 only)
    orientation: Orientation
    plan: MamboPlan
    stats: dict[str, Any] = field(default_factory=dict)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bicubic resize of a [0, 1] image to (H, W), clipped: area-like going down, smooth going up."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    y = F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bicubic", align_corners=False, antialias=True)
    return y[0, 0].clamp(0.0, 1.0).numpy()


def intensity_window(raw: np.ndarray, mapped: np.ndarray, breast: np.ndarray) -> tuple[float, float]:
    """(lo, hi) with mapped = (raw - lo) / (hi - lo) inside the breast: the inverse of the intensity mapping,
    fitted on the unclipped pixels, so outputs can go back to the input's own intensities whatever the
    mapping's rule (min-max, percentiles) was."""
    r, m = raw[breast].astype(np.float64), mapped[breast].astype(np.float64)
    inside = (m > 1e-6) & (m < 1 - 1e-6)
    if inside.sum() >= 2 and np.ptp(r[inside]) > 0:
        a, b = np.polyfit(r[inside], m[inside], 1)
        if a > 0:
            return float(-b / a), float((1 - b) / a)
    return (float(r.min()), float(r.max())) if r.size else (0.0, 1.0)


def _place(image: np.ndarray, side: int) -> np.ndarray:
    """A canonical [0, 1] image at the top-left of a side x side background (0) canvas (geometry's layout)."""
    out = np.zeros((side, side), np.float32)
    h, w = min(image.shape[0], side), min(image.shape[1], side)
    out[:h, :w] = image[:h, :w]
    return out


class SuperResolutionPipeline(OnMambo):
    """Stages 2-3 of a MAMBO bundle, driven by a real low-resolution image."""

    def __call__(
        self,
        image: np.ndarray,
        config: SuperResConfig = DEFAULT_CONFIG,
        *,
        info: Any = None,
        callback: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> SuperResResult:
        t0 = time.perf_counter()
        mambo, g = self.mambo, self.mambo.geometry
        # 1. preprocess with the bundle's chain: breast mask, chest wall left, intensity mapping (, crop)
        pre = preprocess_image(image, info, mambo.preprocess)
        low, breast, orientation = pre.image, pre.mask, pre.orientation
        raw = pre.to_canonical(validate_image(image))
        lo, hi = intensity_window(1.0 - raw if pre.inverted else raw, low, breast)
        h, w = low.shape
        out_shape = config.target_size(*pre.source_shape)  # the input's frame at the target resolution
        _, _, H, W = pre.box_at(out_shape)  # the canonical region the models generate
        plan = mambo.plan(H, W)
        spec = mambo.spec(config.options)
        scale = max(H / h, W / w)
        stand_in = config.stand_in
        if stand_in == "auto":
            stand_in = "mid" if scale <= MID_STAND_IN_RATIO * g.k else "global"
        # 2. the input stands in for the global image: its region of the canvas, at s / L
        gh, gw = max(1, round(H * g.s / plan.canvas)), max(1, round(W * g.s / plan.canvas))
        global_image = _place(resize_image(low, (gh, gw)), g.s)
        n = spec.steps
        weights = {"patch": plan.patch_grid.n * n}
        if stand_in == "global":
            weights["local"] = plan.local_grid.n * n
        reporter = Reporter(callback, cancel, stage_weights=weights)
        reporter.check_cancel()
        stats: dict[str, Any] = {}
        # 3. the mid image: the input itself (stage 3 only), or stage 2 conditioned on the real global
        if stand_in == "mid":
            mid_image = resize_image(low, (-(-H // g.k), -(-W // g.k)))
        else:
            mid_image, local_stats = mambo.generate_mid(global_image, plan, spec, reporter)
            stats["local"] = local_stats.to_dict()
        # 4. stage 3: native-resolution patches conditioned on mid crops + the global image
        full, patch_stats = mambo.generate_full(global_image, mid_image, plan, spec, reporter)
        stats["patch"] = patch_stats.to_dict()
        # 5. back to the input's intensity window, frame and orientation (and polarity); outside the
        #    breast the input's own background, resized (its level and labels are not the model's to change)
        soft_breast = pre.to_source(resize_image(breast.astype(np.float32), (H, W)), out_shape)
        windowed = pre.to_source(np.clip(lo + full * (hi - lo), 0.0, 1.0), out_shape)
        generated = 1.0 - windowed if pre.inverted else windowed
        own = resize_image(validate_image(image), out_shape)
        return SuperResResult(
            image=np.ascontiguousarray(soft_breast * generated + (1.0 - soft_breast) * own, dtype=np.float32),
            normalized=np.ascontiguousarray(pre.to_source(full, out_shape), dtype=np.float32),
            global_image=global_image,
            mid_image=np.asarray(mid_image, np.float32),
            stand_in=stand_in,
            orientation=orientation,
            plan=plan,
            stats={
                "input_size": list(pre.source_shape),
                "output_size": list(out_shape),
                "inverted": pre.inverted,
                "scale": round(scale, 4),
                "stand_in": stand_in,
                "sampler": config.options.sampler,
                "steps": n,
                "stitching": config.options.stitching,
                "seed": config.options.seed,
                "orientation": orientation.to_dict(),
                "intensity_window": [round(lo, 6), round(hi, 6)],
                "stages": stats,
                "model_evaluations": sum(int(s["model_evaluations"]) for s in stats.values()),
                "sequential_calls": sum(int(s["sequential_calls"]) for s in stats.values()),
                "seconds": round(time.perf_counter() - t0, 4),
            },
        )
