"""The typed requests of the three things mammogen does, shared by the HTTP API, the CLI and the workers.

A request is validated when it is built (``BadInputError`` naming the field) and round-trips through
JSON (``to_dict`` / ``from_dict``), which is how it travels on the queue: the API builds one from
the HTTP body, the worker rebuilds it and hands it to the same pipeline entry point the CLI calls
(``MamboPipeline.run`` / ``DualViewPipeline.run``, ``SuperResolutionPipeline.__call__``,
``AnomalyPipeline.__call__``). No torch here: the API imports this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, TypeVar

from models.anomaly_postprocess import BINARIZE_MODES, STRONG_POST, BinarizeMode, PostProcess
from models.errors import BadInputError
from models.lesion_spec import MAX_LESIONS, LesionSpec
from models.options import SamplingOptions, default_options

Model = Literal["mambo", "dualview"]
MODELS: tuple[str, ...] = ("mambo", "dualview")
Laterality = Literal["L", "R"]
StandIn = Literal["auto", "global", "mid"]
STAND_INS: tuple[str, ...] = ("auto", "global", "mid")
Resolution = Literal["global", "full"]
RESOLUTIONS: tuple[str, ...] = ("global", "full")

R = TypeVar("R")


class _Request:
    """JSON round trip of a request (how it travels on the queue)."""

    options: SamplingOptions

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        d["options"] = self.options.to_dict()
        return d

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadInputError(f"unknown request field(s): {', '.join(unknown)}")
        values = {**d, "options": SamplingOptions.from_dict(d["options"])} if "options" in d else dict(d)
        return cls(**values)


def chest_wall_side(laterality: Laterality) -> Literal["left", "right"]:
    """Where the chest wall sits in a standard mammogram display: right breast on the right, left on the left.

    (DICOM PatientOrientation R-CC is P\\L: columns run toward posterior, the chest wall.)
    """
    if laterality not in ("L", "R"):
        raise BadInputError(f"laterality must be 'L' or 'R', got {laterality!r}")
    return "right" if laterality == "R" else "left"


@dataclass(frozen=True)
class GenerationRequest(_Request):
    """MAMBO images or dual-view CC + MLO pairs: one per seed of ``options``.

    ``height``/``width`` unset: the bundle's native size (MAMBO; dual-view pairs have a fixed size).
    ``laterality`` decides the chest-wall side of the output (standard display). ``options`` unset:
    the model's sampling defaults (``models.options.SAMPLING_DEFAULTS``), one seed. ``label``: the class
    of a class-conditional MAMBO bundle (API field ``class``). ``lesions``: inserted into every image
    after generation (``models.lesion_insertion``), with their masks returned.
    """

    model: Model = "mambo"
    height: int | None = None
    width: int | None = None
    laterality: Laterality = "R"
    options: SamplingOptions = None  # type: ignore[assignment]  # None: filled in by the model's defaults
    label: str | None = None
    lesions: tuple[LesionSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise BadInputError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.options is None:
            object.__setattr__(self, "options", default_options(self.model))
        chest_wall_side(self.laterality)
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise BadInputError(f"{name} must be a positive integer, got {value!r}")
        if self.model == "dualview" and (self.height is not None or self.width is not None):
            raise BadInputError("dual-view pairs have the bundle's fixed size: leave height and width unset")
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            raise BadInputError(f"class must be a class name, got {self.label!r}")
        if self.model == "dualview" and (self.label is not None or self.lesions):
            raise BadInputError("class and lesions apply to MAMBO images, not dual-view pairs")
        lesions = tuple(les if isinstance(les, LesionSpec) else LesionSpec.from_dict(les) for les in self.lesions)
        if len(lesions) > MAX_LESIONS:
            raise BadInputError(f"at most {MAX_LESIONS} lesions per image, got {len(lesions)}")
        object.__setattr__(self, "lesions", lesions)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "lesions": [les.to_dict() for les in self.lesions]}

    @property
    def count(self) -> int:
        return len(self.options.seeds)

    @property
    def chest_wall(self) -> Literal["left", "right"]:
        return chest_wall_side(self.laterality)


#: A super-resolution's sampling when it names none (``models.options.SAMPLING_DEFAULTS``).
SUPERRES_OPTIONS = default_options("superres")


@dataclass(frozen=True)
class SuperResConfig(_Request):
    """Super-resolution: the target size (``scale`` x the input, or ``height``/``width``), what the input
    stands in for (``auto``: the mid image when the scale is small, else the global image), the sampling.
    ``options`` holds one seed."""

    scale: int | None = 4
    height: int | None = None
    width: int | None = None
    stand_in: StandIn = "auto"
    options: SamplingOptions = SUPERRES_OPTIONS

    def __post_init__(self) -> None:
        if self.stand_in not in STAND_INS:
            raise BadInputError(f"stand_in must be one of {', '.join(STAND_INS)}, got {self.stand_in!r}")
        if (self.height is None) != (self.width is None):
            raise BadInputError("give both height and width, or neither")
        if self.height is None and (self.scale is None or isinstance(self.scale, bool) or int(self.scale) < 2):
            raise BadInputError(f"scale must be an integer >= 2, got {self.scale!r}")
        if len(self.options.seeds) != 1:
            raise BadInputError(f"super-resolution takes one seed, got {len(self.options.seeds)}")

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        """The output size for an h x w input."""
        if self.height is not None and self.width is not None:
            if self.height < h or self.width < w:
                raise BadInputError(f"target {self.height}x{self.width} is smaller than the {h}x{w} input")
            return int(self.height), int(self.width)
        return h * int(self.scale or 0), w * int(self.scale or 0)


#: A lesion insertion's sampling when it names none (``models.options.SAMPLING_DEFAULTS``).
INSERTION_OPTIONS = default_options("insertion")


@dataclass(frozen=True)
class InsertionRequest(_Request):
    """Lesions to insert into one image (``models.lesion_insertion``); ``options`` holds one seed and
    the guidance scale."""

    lesions: tuple[LesionSpec, ...] = ()
    options: SamplingOptions = INSERTION_OPTIONS

    def __post_init__(self) -> None:
        lesions = tuple(les if isinstance(les, LesionSpec) else LesionSpec.from_dict(les) for les in self.lesions)
        if not lesions:
            raise BadInputError("give at least one lesion")
        if len(lesions) > MAX_LESIONS:
            raise BadInputError(f"at most {MAX_LESIONS} lesions per image, got {len(lesions)}")
        object.__setattr__(self, "lesions", lesions)
        if len(self.options.seeds) != 1:
            raise BadInputError(f"lesion insertion takes one seed, got {len(self.options.seeds)}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "lesions": [les.to_dict() for les in self.lesions]}


#: The stronger recipe's sampling: DDPM over the whole 1000-step schedule, five reconstructions.
ANOMALY_OPTIONS = default_options("anomaly", seeds=(0, 1, 2, 3, 4))


@dataclass(frozen=True)
class AnomalyConfig(_Request):
    """An anomaly map. Defaults: the paper's lambda = 700 with the stronger recipe (5 seeds, L1).

    ``options.steps`` spaces the sampler over the full 1000-step schedule; denoising starts at the
    first scheduled timestep <= ``lam`` (DDPM with 1000 steps: timesteps lam..0, lam + 1 model calls).
    One reconstruction per seed of ``options``.
    """

    lam: int = 700
    post: PostProcess = STRONG_POST
    threshold_mode: BinarizeMode = "otsu"
    threshold: float | None = None
    resolution: Resolution = "global"
    options: SamplingOptions = ANOMALY_OPTIONS

    def __post_init__(self) -> None:
        if isinstance(self.lam, bool) or not isinstance(self.lam, int) or not 0 < self.lam < 1000:
            raise BadInputError(f"lambda (timestep) must lie in 1..999 (of 1000 timesteps), got {self.lam!r}")
        if self.threshold_mode not in BINARIZE_MODES:
            modes = ", ".join(BINARIZE_MODES)
            raise BadInputError(f"threshold mode must be one of {modes}, got {self.threshold_mode!r}")
        if self.threshold_mode in ("fixed", "percentile") and self.threshold is None:
            raise BadInputError(f"threshold mode {self.threshold_mode!r} needs a threshold")
        if self.resolution not in RESOLUTIONS:
            raise BadInputError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {self.resolution!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnomalyConfig:  # type: ignore[override]
        post = d.get("post")
        return super().from_dict({**d, "post": PostProcess(**post)} if isinstance(post, dict) else d)


def with_seeds(request: R, seeds: tuple[int, ...]) -> R:
    """The same request for other seeds (e.g. one lock-step group of a longer run)."""
    return replace(request, options=replace(request.options, seeds=seeds))  # type: ignore[type-var]
