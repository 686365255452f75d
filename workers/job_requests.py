"""What a job carries on the queue: the typed model request, the output formats and (for uploads) the file.

The API builds one of these from a validated HTTP request, the queue stores ``to_dict()`` (JSON),
and the job function rebuilds it with ``from_dict`` before it runs the same pipeline entry point the
CLI runs. Seeds are concrete here: a request without a seed got a random one when it was accepted,
so a retried job makes the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

from models.errors import BadInputError
from models.lesion_spec import LesionSpec
from models.requests import AnomalyConfig, GenerationRequest, InsertionRequest, SuperResConfig

#: dicom: Secondary Capture; dicom-mg: Digital Mammography For Presentation; dicom-seg: the anomaly
#: mask as DICOM SEG (docs/DICOM.md).
OutputFormat = Literal["png16", "npy", "dicom", "dicom-mg", "dicom-seg"]
OUTPUT_FORMATS: tuple[str, ...] = ("png16", "npy", "dicom", "dicom-mg", "dicom-seg")
DICOM_FORMATS: tuple[str, ...] = ("dicom", "dicom-mg", "dicom-seg")


def _formats(formats: Any) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(formats))
    bad = [f for f in out if f not in OUTPUT_FORMATS]
    if bad or not out:
        raise BadInputError(f"formats must be a non-empty list of {', '.join(OUTPUT_FORMATS)}, got {list(formats)}")
    return out


@dataclass(frozen=True)
class StoredUpload:
    """A validated upload waiting in the result store (``uploads/<job id>/<name>``)."""

    name: str
    format: str
    height: int
    width: int
    sha256: str


@dataclass(frozen=True)
class _Job:
    kind: ClassVar[str]
    request_type: ClassVar[Any]
    request: Any
    formats: tuple[str, ...] = ("png16",)
    deliver: tuple[str, ...] = ()  # configured PACS that receive the DICOM results (workers.delivery)

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", _formats(self.formats))
        object.__setattr__(self, "deliver", tuple(dict.fromkeys(self.deliver)))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"request": self.request.to_dict(), "formats": list(self.formats)}
        if self.deliver:
            d["deliver"] = list(self.deliver)
        if getattr(self, "view", None) is not None:
            d["view"] = self.view  # type: ignore[attr-defined]
        upload = getattr(self, "upload", None)
        return d if upload is None else {**d, "upload": asdict(upload)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        extra: dict[str, Any] = {"upload": StoredUpload(**d["upload"])} if "upload" in d else {}
        if "view" in d:
            extra["view"] = d["view"]
        return cls(
            request=cls.request_type.from_dict(d["request"]),
            formats=tuple(d["formats"]),
            deliver=tuple(d.get("deliver", ())),
            **extra,
        )


@dataclass(frozen=True)
class GenerateJob(_Job):
    kind: ClassVar[str] = "generate"
    request_type: ClassVar[Any] = GenerationRequest
    request: GenerationRequest
    view: Literal["CC", "MLO"] | None = None  # MAMBO: the view DICOM records (the model has none)


@dataclass(frozen=True, kw_only=True)
class _UploadJob(_Job):
    upload: StoredUpload


@dataclass(frozen=True, kw_only=True)
class SuperResolveJob(_UploadJob):
    kind: ClassVar[str] = "super-resolve"
    request_type: ClassVar[Any] = SuperResConfig
    request: SuperResConfig


@dataclass(frozen=True, kw_only=True)
class AnomalyMapJob(_UploadJob):
    kind: ClassVar[str] = "anomaly-map"
    request_type: ClassVar[Any] = AnomalyConfig
    request: AnomalyConfig


@dataclass(frozen=True, kw_only=True)
class InsertLesionJob(_UploadJob):
    """Lesions into an uploaded mammogram (``models.lesion_insertion``); ``formats`` are concrete here
    (the API resolved the default from the input: ``models.lesion_outputs.default_formats``).

    ``masks``: the uploaded lesion masks, waiting beside the input in the upload store (never in Redis);
    a lesion ``{"kind", "mask": N}`` of the request is the N-th. ``from_dict`` needs ``load_mask`` to read
    them back (the worker's store)."""

    kind: ClassVar[str] = "insert-lesion"
    request_type: ClassVar[Any] = InsertionRequest
    request: InsertionRequest
    masks: tuple[StoredUpload, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        return {**d, "masks": [asdict(m) for m in self.masks]} if self.masks else d

    @classmethod
    def from_dict(cls, d: dict[str, Any], load_mask: Callable[[StoredUpload], Any] | None = None) -> Any:
        masks = tuple(StoredUpload(**m) for m in d.get("masks", ()))
        if masks:
            if load_mask is None:
                raise BadInputError("this job's lesion masks are files in the upload store: give load_mask")
            arrays = [load_mask(m) for m in masks]
            request = d["request"]
            lesions = [LesionSpec.from_dict(item, arrays) for item in request["lesions"]]
            d = {**d, "request": {**request, "lesions": lesions}}
        job = super().from_dict({k: v for k, v in d.items() if k != "masks"})
        return replace(job, masks=masks)


Job = GenerateJob | SuperResolveJob | AnomalyMapJob | InsertLesionJob
UploadJob = SuperResolveJob | AnomalyMapJob | InsertLesionJob
