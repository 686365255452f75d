"""Job timeouts sized for the work: RQ's 180 s default kills real generations (rq #1222), one
fixed large timeout leaves a hung tiny job holding a worker for hours."""

from __future__ import annotations

import math
from typing import Any

#: Seconds per 256 x 256 model evaluation on the slowest supported device (paper U-Net on 2 CPU cores).
SECONDS_PER_EVAL = 1.5
BASE_SECONDS = 120  # bundle warm-up, file writing, DICOM encoding


def model_evaluations(kind: str, params: dict[str, Any], tile: int = 256) -> int:
    """An upper estimate of 256^2-equivalent U-Net evaluations a job needs."""
    steps = int(params.get("steps", 50))
    if kind == "generate":
        if params.get("model") == "dualview":
            return steps * int(params.get("count", 1))
        h = int(params.get("height") or 3072)
        w = int(params.get("width") or 3072)
        patches = math.ceil(h / (tile - 32)) * math.ceil(w / (tile - 32))
        return steps * int(params.get("count", 1)) * (1 + patches + patches // 9 + 1)
    scale = int(params.get("scale") or 1)  # super-resolution output is scale x the input
    h = int(params.get("input_height") or 1024) * scale
    w = int(params.get("input_width") or 1024) * scale
    patches = math.ceil(h / (tile - 32)) * math.ceil(w / (tile - 32))
    repeats = int(params.get("repeats", 1))
    return steps * repeats * (patches + patches // 9 + 1)


def job_timeout_s(kind: str, params: dict[str, Any], cap_s: int) -> int:
    return int(min(cap_s, BASE_SECONDS + SECONDS_PER_EVAL * model_evaluations(kind, params)))
