"""Tiny pipelines and requests for the pipeline tests: random weights, flat keywords."""

from __future__ import annotations

from typing import Any, TypeVar

import torch

from models.geometry import MamboGeometry
from models.mambo import MamboPipeline
from models.options import SamplingOptions
from models.unet import build_unet

R = TypeVar("R")


def tiny_mambo(geometry: MamboGeometry, **kwargs: Any) -> MamboPipeline:
    """A MAMBO pipeline of three random tiny U-Nets (seeded) on ``geometry``."""
    torch.manual_seed(0)
    nets = [build_unet("tiny", c, 1, geometry.s).eval() for c in (1, 3, 3)]
    return MamboPipeline(*nets, geometry=geometry, **kwargs)


def flat_request(request_type: type[R], **kw: Any) -> R:
    """A request from flat keywords: the sampling ones (steps, seeds, sampler, ...) go into its options."""
    options = {k: kw.pop(k) for k in list(kw) if k in SamplingOptions.__dataclass_fields__}
    return request_type(**kw, options=SamplingOptions(**options))  # type: ignore[call-arg]
