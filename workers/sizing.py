"""Job timeouts sized for the work: RQ's 180 s default kills real generations (rq #1222), one
fixed large timeout leaves a hung tiny job holding a worker for hours."""

from __future__ import annotations

import math
from typing import Any

#: Seconds per 256 x 256 model evaluation on the slowest supported device (paper U-Net on 2 CPU cores).
SECONDS_PER_EVAL_256 = 1.5
#: Headroom over the estimate: a busy host, a slower device, first-call warm-up.
SAFETY = 4.0
BASE_SECONDS = 120  # bundle warm-up, file writing, DICOM encoding


def _tiles(h: int, w: int, tile: int, overlap: int) -> int:
    stride = max(1, tile - overlap)
    return math.ceil(max(h - overlap, 1) / stride) * math.ceil(max(w - overlap, 1) / stride)


def model_evaluations(kind: str, params: dict[str, Any], tile: int = 256, overlap: int = 32, k: int = 3) -> int:
    """An upper estimate of the tile-sized U-Net evaluations a job needs (patches + local contexts + global)."""
    steps = int(params.get("steps", 50))
    count = int(params.get("count", 1))
    if kind == "generate" and params.get("model") == "dualview":
        return steps * count
    if kind == "generate":
        h = int(params.get("height") or 3 * k * tile)
        w = int(params.get("width") or 3 * k * tile)
    else:
        scale = int(params.get("scale") or 1)  # super-resolution output is scale x the input
        h = int(params.get("input_height") or 1024) * scale
        w = int(params.get("input_width") or 1024) * scale
        count = int(params.get("repeats", 1))
    patches = _tiles(h, w, tile, overlap)
    local = _tiles(math.ceil(h / k), math.ceil(w / k), tile, overlap)
    return steps * count * (patches + local + 1)


def job_timeout_s(kind: str, params: dict[str, Any], cap_s: int, geometry: dict[str, Any] | None = None) -> int:
    """Timeout for one job from its size and steps and the bundle's tile ``geometry`` (s, overlap, k)."""
    g = geometry or {}
    tile, overlap, k = int(g.get("s", 256)), int(g.get("overlap", 32)), int(g.get("k", 3))
    native = g.get("native_size")
    if kind == "generate" and native and not (params.get("height") and params.get("width")):
        params = {**params, "height": params.get("height") or native[0], "width": params.get("width") or native[1]}
    per_eval = SECONDS_PER_EVAL_256 * (tile / 256) ** 2
    estimate = model_evaluations(kind, params, tile, overlap, k) * per_eval
    return int(min(cap_s, BASE_SECONDS + SAFETY * estimate))
