"""The one vocabulary of sampling options, validated once, with no torch in sight.

The HTTP schema, the CLI, the job functions and the pipelines all take a :class:`SamplingOptions`;
its constructor is the only place a sampler name, a step count, eta, a stitching mode, a batch
bound or a seed is checked (a ``BadInputError`` naming the option). The API field and CLI flag
names are the options' own names (``steps``, ``eta``, ``stitching``, ``max_batch``, ``seed``).

Seeds: a request gives a first seed (or none: a fresh random one, recorded in the job summary) and
a count; image i uses seed + i (:func:`request_seeds`). How a seed becomes noise is the sampler's
rule (``models.sampling.tile_generator``), the same for every model.
"""

from __future__ import annotations

import numbers
import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

from models.errors import BadInputError

Sampler = Literal["ddpm", "ddim", "dpmsolver"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmsolver")
Stitching = Literal["raster", "wavefront", "fused"]
STITCHING_MODES: tuple[str, ...] = ("raster", "wavefront", "fused")
FusedWeights = Literal["uniform", "feather"]
FUSED_WEIGHTS: tuple[str, ...] = ("uniform", "feather")
#: Steps are spaced over the training schedule's timesteps (1000 for every bundle this project makes).
MAX_STEPS = 1000
#: A batch bound above this is a typo, not a memory budget.
MAX_BATCH = 4096
MAX_SEED = 2**63 - 1
#: Classifier-free guidance beyond this only saturates.
MAX_GUIDANCE = 20.0


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: sampler, steps, eta (DDIM), tile stitching, tiles per network call, the seeds,
    the classifier-free guidance scale (class-conditional networks only).

    ``seeds`` holds one seed per image (generation), per reconstruction (anomaly maps) or per pair
    (dual-view); ``skip_background`` and ``fused_weights`` only matter to tiled (MAMBO) stages.
    """

    sampler: Sampler = "ddim"
    steps: int = 50
    eta: float = 0.0
    stitching: Stitching = "wavefront"
    max_batch: int = 16
    seeds: tuple[int, ...] = (0,)
    skip_background: bool = True
    fused_weights: FusedWeights = "feather"
    guidance_scale: float = 1.0  # classifier-free guidance of class-conditional networks (1: plain conditional)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise BadInputError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        _set(self, "steps", _integer("steps", self.steps, 1, MAX_STEPS))
        if isinstance(self.eta, bool) or not isinstance(self.eta, numbers.Real) or not 0.0 <= self.eta <= 1.0:
            raise BadInputError(f"eta must be a number in [0, 1], got {self.eta!r}")
        _set(self, "eta", float(self.eta))
        if self.stitching not in STITCHING_MODES:
            raise BadInputError(f"stitching must be one of {', '.join(STITCHING_MODES)}, got {self.stitching!r}")
        _set(self, "max_batch", _integer("max_batch", self.max_batch, 1, MAX_BATCH))
        seeds = tuple(_integer("seed", s, 0, MAX_SEED) for s in self.seeds)
        if not seeds:
            raise BadInputError("at least one seed is needed")
        _set(self, "seeds", seeds)
        if self.fused_weights not in FUSED_WEIGHTS:
            raise BadInputError(f"fused_weights must be one of {', '.join(FUSED_WEIGHTS)}, got {self.fused_weights!r}")
        _set(self, "skip_background", bool(self.skip_background))
        g = self.guidance_scale
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not 0.0 <= g <= MAX_GUIDANCE:
            raise BadInputError(f"guidance_scale must be a number in [0, {MAX_GUIDANCE:g}], got {g!r}")
        _set(self, "guidance_scale", float(g))

    @property
    def seed(self) -> int:
        """The first seed (single-image requests)."""
        return self.seeds[0]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingOptions:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise BadInputError(f"unknown sampling option(s): {', '.join(unknown)}")
        return cls(**{**d, **({"seeds": tuple(d["seeds"])} if "seeds" in d else {})})


def request_seeds(seed: int | None, count: int) -> tuple[int, ...]:
    """The one seed rule of a request: ``seed, seed + 1, ...`` (``count`` of them); no seed: a random first one."""
    count = _integer("count", count, 1, 10_000)
    first = random.SystemRandom().randrange(2**31) if seed is None else _integer("seed", seed, 0, MAX_SEED - count)
    return tuple(first + i for i in range(count))


def _integer(name: str, value: Any, lo: int, hi: int) -> int:
    integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise BadInputError(f"{name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise BadInputError(f"{name} must be in {lo}..{hi}, got {value}")
    return int(value)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


DEFAULT_OPTIONS = SamplingOptions()
