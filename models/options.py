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

#: The kinds of job that sample: MAMBO and dual-view generation, super-resolution, anomaly maps,
#: lesion insertion.
JOB_KINDS: tuple[str, ...] = ("mambo", "dualview", "superres", "anomaly", "insertion")


@dataclass(frozen=True)
class KindDefaults:
    """What a request of one job kind samples with when it leaves ``sampler`` or ``steps`` unset:
    ``sampler``, and per sampler the step count (a request naming only a sampler gets that sampler's)."""

    sampler: Sampler
    steps: dict[str, int]

    def resolve(self, sampler: str | None = None, steps: int | None = None) -> tuple[str, int]:
        chosen = sampler or self.sampler
        return chosen, steps if steps is not None else self.steps.get(chosen, self.steps[self.sampler])


#: The one table of sampling defaults per job kind (the API, the CLI and the typed requests read it).
#: Generation and super-resolution, from ``mammogen bench steps`` on the demo bundles 2.0.0
#: (docs/PERFORMANCE.md §7): no setting cheaper than DDIM 50 came as close to the 150-step image with
#: seams as good, so DDIM 50 stays; fewer steps raise the seam ratio (replacement has fewer steps to
#: blend the overlaps). A request naming DPM-Solver++ gets 25 steps, the count of it closest to the
#: 150-step image in every kind, at half DDIM 50's evaluations; DDPM keeps the schedule's 1000.
#: Anomaly maps keep their recipe: DDPM over all 1000 timesteps, from lambda.
SAMPLING_DEFAULTS: dict[str, KindDefaults] = {
    "mambo": KindDefaults("ddim", {"ddim": 50, "dpmsolver": 25, "ddpm": 1000}),
    "dualview": KindDefaults("ddim", {"ddim": 50, "dpmsolver": 25, "ddpm": 1000}),
    "superres": KindDefaults("ddim", {"ddim": 50, "dpmsolver": 25, "ddpm": 1000}),
    "anomaly": KindDefaults("ddpm", {"ddpm": 1000, "ddim": 50, "dpmsolver": 20}),
    # not measured by bench steps: keeps the DDIM 50 it was built with
    "insertion": KindDefaults("ddim", {"ddim": 50, "dpmsolver": 20, "ddpm": 1000}),
}


def default_sampling(kind: str, sampler: str | None = None, steps: int | None = None) -> tuple[str, int]:
    """(sampler, steps) of a ``kind`` request that may leave either unset (see :data:`SAMPLING_DEFAULTS`)."""
    if kind not in SAMPLING_DEFAULTS:
        raise BadInputError(f"unknown job kind {kind!r}; choose one of {', '.join(JOB_KINDS)}")
    return SAMPLING_DEFAULTS[kind].resolve(sampler, steps)


def describe_defaults(*kinds: str) -> str:
    """The defaults of ``kinds`` in words, for help texts and the OpenAPI descriptions."""
    parts = []
    for kind in kinds:
        d = SAMPLING_DEFAULTS[kind]
        others = ", ".join(f"{s} {n}" for s, n in d.steps.items() if s != d.sampler)
        parts.append(f"{kind}: {d.sampler} {d.steps[d.sampler]} (other samplers: {others})")
    return "; ".join(parts)


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: sampler, steps, eta (DDIM), tile stitching, tiles per network call, the seeds,
    the classifier-free guidance scale (class-conditional networks only).

    ``seeds`` holds one seed per image (generation), per reconstruction (anomaly maps) or per pair
    (dual-view); ``skip_background`` and ``fused_weights`` only matter to tiled (MAMBO) stages.
    """

    sampler: Sampler = SAMPLING_DEFAULTS["mambo"].sampler
    steps: int = SAMPLING_DEFAULTS["mambo"].steps[SAMPLING_DEFAULTS["mambo"].sampler]
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


def default_options(kind: str, **options: Any) -> SamplingOptions:
    """A ``kind`` job's SamplingOptions with its default sampler and steps (``options`` set the rest)."""
    sampler, steps = default_sampling(kind, options.pop("sampler", None), options.pop("steps", None))
    return SamplingOptions(sampler, steps, **options)  # type: ignore[arg-type]


DEFAULT_OPTIONS = default_options("mambo")
