"""The checks a job's input image must pass, in one place: the API runs them before queueing and the
worker before any model work, so both refuse the same inputs with the same message.

``check_input_size`` needs only the header (the API runs it before decoding anything);
``check_input_image`` runs it again on the decoded image and then the preprocessing chain the
pipelines start with (finite, not empty, a breast in it), under the bundle's recorded config.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from models.errors import BadInputError
from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig, Preprocessed, preprocess_image

InputKind = Literal["super-resolve", "anomaly-map", "insert-lesion"]


def check_input_size(
    kind: InputKind,
    height: int,
    width: int,
    *,
    tile: int,
    scale: int | None = None,
    resolution: str | None = None,
) -> None:
    """What the size alone rules out: an output below one ``tile`` of the MAMBO bundle."""
    if kind == "super-resolve" and scale is not None and min(height, width) * scale < tile:
        raise BadInputError(
            f"a {height}x{width} input at scale {scale} is smaller than one {tile}-pixel tile: use a larger scale"
        )
    if kind == "anomaly-map" and resolution == "full" and min(height, width) < tile:
        raise BadInputError(
            f"full-resolution anomaly maps need an image of at least {tile}x{tile}, got {height}x{width}"
        )


def check_input_image(
    image: np.ndarray,
    kind: InputKind,
    *,
    tile: int,
    info: Any = None,
    preprocess: PreprocessConfig = DEFAULT_PREPROCESS,
    scale: int | None = None,
    resolution: str | None = None,
) -> Preprocessed:
    """The size checks, then the preprocessing chain (BadInputError for NaN/Inf, empty or breastless images)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        check_input_size(kind, arr.shape[0], arr.shape[1], tile=tile, scale=scale, resolution=resolution)
    return preprocess_image(arr, info, preprocess)
