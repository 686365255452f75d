"""Request and response models of the HTTP API (pydantic), with the examples OpenAPI shows.

A request body becomes the typed request the CLI also builds (``models.requests``, with its
``models.options.SamplingOptions``) while pydantic parses it: that constructor is the one place the
sampling options are checked, and its BadInputError becomes FastAPI's 422 naming the problem before
anything reaches the queue. Service limits (count, scale, repeats, minimum size) are bounds here;
bounds that depend on the deployment (largest image) are checked against `Settings` in the routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, model_validator

from models.errors import BadInputError
from models.lesion_spec import LESION_KINDS, MAX_LESIONS, LesionSpec, mask_index
from models.options import (
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    SAMPLERS,
    STITCHING_MODES,
    SamplingOptions,
    default_sampling,
    describe_defaults,
    request_seeds,
)
from models.requests import STAND_INS, AnomalyConfig, GenerationRequest, InsertionRequest, SuperResConfig
from workers.job_requests import (
    DICOM_FORMATS,
    OUTPUT_FORMATS,
    AnomalyMapJob,
    GenerateJob,
    InsertLesionJob,
    StoredUpload,
    SuperResolveJob,
)

Sampler = Literal[SAMPLERS]  # type: ignore[valid-type]
Stitching = Literal[STITCHING_MODES]  # type: ignore[valid-type]
OutputFormat = Literal[OUTPUT_FORMATS]  # type: ignore[valid-type]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Priority = Literal["high", "normal", "low"]
#: A configured PACS, by its key in MAMMOGEN_PACS (docs/DICOM.md); never an address.
PacsName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
DicomUid = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LesionIn(_Strict):
    """One lesion to insert: its kind, centre (row, col) and diameter, in pixels of the image it goes into
    (as given, before any flip). ``models.lesion_spec.LesionSpec`` checks it."""

    kind: str = Field(description=f"A lesion kind of the bundle's lesion network (demo: {', '.join(LESION_KINDS)}).")
    center: tuple[float, float] = Field(description="(row, col) of the lesion's centre, in pixels.")
    diameter_px: float = Field(description="Diameter in pixels (at least 3).")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"kind": "mass", "center": [300, 200], "diameter_px": 24}]}
    )

    def spec(self) -> LesionSpec:
        return LesionSpec(self.kind, self.center, self.diameter_px)


def _steps(*kinds: str) -> Any:
    return Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        description=f"Denoising steps per stage; unset: the job kind's default ({describe_defaults(*kinds)}).",
    )


def _sampler(*kinds: str) -> Any:
    return Field(default=None, description=f"Sampler; unset: the job kind's default ({describe_defaults(*kinds)}).")


class DenoiseParams(_Strict):
    """The sampling options every job kind takes (``models.options.SamplingOptions`` validates them, once).

    A request that gives no seed gets a random one when it is accepted; the job summary records it.
    Unset ``sampler`` / ``steps`` are the job kind's defaults (``models.options.SAMPLING_DEFAULTS``, the
    one table the CLI reads too); the job summary records what ran.
    """

    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED - 16, description="Random seed of the first image; unset: random."
    )
    steps: int | None = _steps("mambo", "dualview", "superres", "anomaly", "insertion")
    sampler: Sampler | None = _sampler("mambo", "dualview", "superres", "anomaly", "insertion")
    eta: float = Field(default=0.0, ge=0.0, le=1.0, description="DDIM eta (0 = deterministic).")
    formats: list[OutputFormat] = Field(
        default_factory=lambda: ["png16"], min_length=1, max_length=5, json_schema_extra={"default": ["png16"]}
    )
    priority: Priority = Field(
        default="normal", description="high jobs start before normal ones, normal before low (one queue each)."
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="http(s) URL that gets the final job record, signed, when the job ends (docs/SERVICE.md).",
    )
    deliver: list[PacsName] = Field(
        default_factory=list,
        max_length=8,
        description="Configured PACS that receive this job's DICOM results (servers set to send_all get them too).",
    )

    #: The formats this kind of job writes (a SEG needs a mask, MG a mammogram).
    allowed_formats: ClassVar[tuple[str, ...]] = ("png16", "npy", "dicom", "dicom-mg")
    _request: Any = PrivateAttr(default=None)

    def _count(self) -> int:
        return 1

    def _kind(self) -> str:
        """The job kind whose sampling defaults apply (``models.options.JOB_KINDS``)."""
        raise NotImplementedError

    def options(self, **extra: Any) -> SamplingOptions:
        """The request's SamplingOptions (a missing seed drawn here, missing sampler/steps the kind's defaults)."""
        sampler, steps = default_sampling(self._kind(), self.sampler, self.steps)
        return SamplingOptions(
            sampler=sampler,  # type: ignore[arg-type]
            steps=steps,
            eta=self.eta,
            seeds=request_seeds(self.seed, self._count()),
            max_batch=getattr(self, "max_batch", None) or 16,
            **extra,
        )

    @model_validator(mode="after")
    def _validated(self) -> DenoiseParams:
        """Build the typed request now: its validation is the only one; a failure is a 422 naming the field."""
        self.deliver = list(dict.fromkeys(self.deliver))
        if self.formats is not None:  # None: the kind's default for its input (insert-lesion)
            self.formats = list(dict.fromkeys(self.formats))
            wrong = [f for f in self.formats if f not in self.allowed_formats]
            if wrong:
                raise ValueError(f"format(s) {', '.join(wrong)} not available here; choose from {self.allowed_formats}")
            if self.deliver and not any(f in DICOM_FORMATS for f in self.formats):
                raise ValueError(f"deliver sends DICOM results: add one of {DICOM_FORMATS} to formats")
        try:
            self._request = self.build_request()
        except BadInputError as exc:
            raise ValueError(exc.message) from exc
        return self

    def build_request(self) -> Any:
        """The typed request of this job kind."""
        raise NotImplementedError

    def client_request(self) -> dict[str, Any]:
        """What the client sent (idempotency fingerprint)."""
        return self.model_dump()


class GenerateRequest(DenoiseParams):
    """POST /generate: MAMBO full-resolution images or dual-view CC + MLO pairs."""

    model: Literal["mambo", "dualview"] = "mambo"
    steps: int | None = _steps("mambo", "dualview")
    sampler: Sampler | None = _sampler("mambo", "dualview")
    height: int | None = Field(default=None, ge=32, description="Output height in pixels; unset: the bundle's size.")
    width: int | None = Field(default=None, ge=32, description="Output width in pixels; unset: the bundle's size.")
    count: int = Field(default=1, ge=1, le=16, description="Images (or CC + MLO pairs) to generate.")
    stitching: Stitching = Field(default="wavefront", description="MAMBO patch order (same result, fewer calls).")
    laterality: Literal["L", "R"] = Field(
        default="R", description="Breast side; the image shows it in standard display (R: chest wall on the right)."
    )
    max_batch: int | None = Field(default=None, ge=1, le=MAX_BATCH, description="Largest model batch (memory bound).")
    view: Literal["CC", "MLO"] | None = Field(
        default=None,
        description="MAMBO only: the view recorded in DICOM output (the model does not condition on it); "
        "required for dicom-mg. Dual-view pairs are CC and MLO by construction.",
    )
    label: str | None = Field(
        default=None,
        alias="class",
        max_length=64,
        description="MAMBO only: the class to generate on a class-conditional bundle (GET /models lists its "
        "classes); unset: unconditional.",
    )
    lesions: list[LesionIn] = Field(
        default_factory=list,
        max_length=MAX_LESIONS,
        description="MAMBO only: lesions inserted into every generated image after generation (coordinates in "
        "the returned image); each image then comes with its masks, its healthy twin and lesions.json.",
    )
    guidance_scale: float = Field(
        default=1.0,
        ge=0.0,
        le=MAX_GUIDANCE,
        description="Classifier-free guidance toward the class / lesion kind (1: the plain conditional model).",
    )

    @model_validator(mode="after")
    def _view_for_mammography(self) -> GenerateRequest:
        if self.model == "dualview" and self.view is not None:
            raise ValueError("view is for MAMBO images; a dual-view pair is always CC + MLO")
        if self.model == "mambo" and "dicom-mg" in self.formats and self.view is None:
            raise ValueError("dicom-mg output of a MAMBO image needs view (CC or MLO) to record")
        return self

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "mambo",
                    "height": 512,
                    "width": 384,
                    "count": 1,
                    "seed": 7,
                    "steps": 25,
                    "sampler": "ddim",
                    "stitching": "wavefront",
                    "formats": ["png16", "dicom"],
                },
                {"model": "dualview", "count": 2, "seed": 1, "steps": 50, "formats": ["png16"]},
            ]
        },
    )

    def _count(self) -> int:
        return self.count

    def _kind(self) -> str:
        return self.model

    def build_request(self) -> GenerationRequest:
        return GenerationRequest(
            self.model,
            self.height,
            self.width,
            self.laterality,
            self.options(stitching=self.stitching, guidance_scale=self.guidance_scale),
            label=self.label,
            lesions=tuple(lesion.spec() for lesion in self.lesions),
        )

    def job(self, deliver: tuple[str, ...] = ()) -> GenerateJob:
        return GenerateJob(self._request, tuple(self.formats), deliver, view=self.view)


class _FormParams(DenoiseParams):
    """Form fields travel next to the ``file`` part: that one is allowed, any other unknown field is refused.

    Instead of a file, the input may be an instance on a configured DICOMweb server: ``pacs`` names
    the server, ``study_uid`` / ``series_uid`` / ``instance_uid`` the instance (all four or none).
    """

    model_config = ConfigDict(extra="ignore")
    #: The multipart file parts of the route (not form fields).
    file_fields: ClassVar[frozenset[str]] = frozenset({"file"})

    pacs: PacsName | None = Field(default=None, description="Configured DICOMweb server to take the input from.")
    study_uid: DicomUid | None = None
    series_uid: DicomUid | None = None
    instance_uid: DicomUid | None = None

    @model_validator(mode="after")
    def _whole_pacs_reference(self) -> _FormParams:
        given = [self.pacs, self.study_uid, self.series_uid, self.instance_uid]
        if any(v is not None for v in given) and not all(v is not None for v in given):
            raise ValueError("an input from a PACS needs pacs, study_uid, series_uid and instance_uid together")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields) - cls.file_fields)
            if unknown:
                raise ValueError(f"unknown form field(s): {', '.join(unknown)}")
        return data


class SuperResolveParams(_FormParams):
    """Form fields of POST /super-resolve (with the image as the ``file`` part)."""

    scale: int = Field(default=4, ge=2, le=16, description="Upscaling factor (the paper uses 4 and 16).")
    steps: int | None = _steps("superres")
    sampler: Sampler | None = _sampler("superres")
    stitching: Stitching = "wavefront"
    stand_in: Literal[STAND_INS] = Field(  # type: ignore[valid-type]
        default="auto", description="What the input replaces: the global image (stages 2+3 run) or the mid image."
    )
    max_batch: int | None = Field(default=None, ge=1, le=MAX_BATCH, description="Largest model batch.")

    def _kind(self) -> str:
        return "superres"

    def build_request(self) -> SuperResConfig:
        return SuperResConfig(self.scale, stand_in=self.stand_in, options=self.options(stitching=self.stitching))

    def job(self, upload: StoredUpload, deliver: tuple[str, ...] = ()) -> SuperResolveJob:
        return SuperResolveJob(request=self._request, upload=upload, formats=tuple(self.formats), deliver=deliver)


class AnomalyMapParams(_FormParams):
    """Form fields of POST /anomaly-map (with the image as the ``file`` part).

    Defaults follow the stronger recipe: noise to lambda = 700, several seeds, Otsu threshold, DDPM over
    the 1000-step schedule (lambda + 1 model calls per seed).
    """

    steps: int | None = _steps("anomaly")
    sampler: Sampler | None = _sampler("anomaly")

    timestep: int = Field(default=700, ge=1, le=999, description="Noise level lambda the input is noised to.")
    repeats: int = Field(default=3, ge=1, le=16, description="Seeds (seed, seed+1, ...) whose residuals are averaged.")
    threshold_mode: Literal["otsu", "fixed", "percentile"] = "otsu"
    threshold: float | None = Field(default=None, ge=0.0, le=100.0, description="For 'fixed' or 'percentile'.")
    resolution: Literal["global", "full"] = Field(
        default="global", description="global: the paper's s x s map; full: native-resolution patch reconstructions."
    )
    max_batch: int | None = Field(default=None, ge=1, le=MAX_BATCH, description="Largest model batch.")

    allowed_formats: ClassVar[tuple[str, ...]] = ("png16", "npy", "dicom", "dicom-seg")

    def _count(self) -> int:
        return self.repeats

    def _kind(self) -> str:
        return "anomaly"

    def build_request(self) -> AnomalyConfig:
        return AnomalyConfig(
            lam=self.timestep,
            threshold_mode=self.threshold_mode,
            threshold=self.threshold,
            resolution=self.resolution,
            options=self.options(),
        )

    def job(self, upload: StoredUpload, deliver: tuple[str, ...] = ()) -> AnomalyMapJob:
        return AnomalyMapJob(request=self._request, upload=upload, formats=tuple(self.formats), deliver=deliver)


class InsertLesionParams(_FormParams):
    """Form fields of POST /insert-lesion (with the image as the ``file`` part, lesion masks as ``masks`` parts).

    ``lesions`` is a JSON list of ``{"kind", "center": [row, col], "diameter_px"}`` in the input's pixels, or
    ``{"kind", "mask": N}``: the N-th ``masks`` part (0 = the first) is the lesion's label image. The API checks
    the list, the masks, the kinds against the served bundle and that each lesion lies on the image; whether it
    lies in the breast and fits the bundle's edit window the worker checks (a failed job, 422).
    """

    lesions: str = Field(
        max_length=16384,
        description='JSON list of lesions: [{"kind": "mass", "center": [row, col], "diameter_px": 24}, ...] '
        'in the input\'s pixels (before any flip); {"kind": "mass", "mask": 0} takes the lesion from the first '
        "masks part.",
        examples=['[{"kind": "mass", "center": [300, 200], "diameter_px": 24}]'],
    )
    guidance_scale: float = Field(
        default=1.0, ge=0.0, le=MAX_GUIDANCE, description="Classifier-free guidance toward the lesion kind."
    )
    max_batch: int | None = Field(default=None, ge=1, le=MAX_BATCH, description="Largest model batch.")
    formats: list[OutputFormat] | None = Field(  # type: ignore[assignment]
        default=None,
        max_length=5,
        description="Unset: png16, plus the edited image as DICOM (dicom-mg when the input states laterality "
        "and a CC/MLO view, else dicom) and the masks as dicom-seg for a DICOM input. Masks and "
        "lesions.json always come.",
    )

    steps: int | None = _steps("insertion")
    sampler: Sampler | None = _sampler("insertion")

    allowed_formats: ClassVar[tuple[str, ...]] = ("png16", "npy", "dicom", "dicom-mg", "dicom-seg")
    file_fields: ClassVar[frozenset[str]] = frozenset({"file", "masks"})
    _items: list[Any] = PrivateAttr(default_factory=list)
    _options: Any = PrivateAttr(default=None)

    def _kind(self) -> str:
        return "insertion"

    def build_request(self) -> InsertionRequest | None:
        """The request, or None when a lesion is an uploaded mask: ``insertion(masks)`` builds it once the
        masks are read. Everything the masks are not needed for is checked here."""
        import json

        from models.lesion_outputs import check_formats

        if self.formats is not None:
            check_formats(self.formats)  # what the formats alone rule out; the input's part after its header
        try:
            items = json.loads(self.lesions)
        except ValueError as exc:
            raise BadInputError(f"lesions is not valid JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(items, list):
            raise BadInputError("lesions must be a JSON list of {kind, center, diameter_px} objects")
        if len(items) > MAX_LESIONS:
            raise BadInputError(f"at most {MAX_LESIONS} lesions per image, got {len(items)}")
        self._items = items
        self._options = self.options(guidance_scale=self.guidance_scale)  # one seed drawn, once
        refs = self.mask_refs()
        for item, ref in zip(items, refs, strict=True):
            if ref is None:
                LesionSpec.from_dict(item)
        return None if any(ref is not None for ref in refs) else self.insertion()

    def mask_refs(self) -> list[int | None]:
        """Per lesion, the index of the masks part it names (None: a lesion by centre and size)."""
        return [mask_index(item) for item in self._items]

    def insertion(self, masks: Sequence[Any] = ()) -> InsertionRequest:
        """The typed request, with the decoded ``masks`` parts (bool arrays) for lesions given by a mask."""
        return InsertionRequest(tuple(LesionSpec.from_dict(item, masks) for item in self._items), self._options)

    def job(
        self,
        request: InsertionRequest,
        upload: StoredUpload,
        formats: tuple[str, ...],
        deliver: tuple[str, ...] = (),
        masks: tuple[StoredUpload, ...] = (),
    ) -> InsertLesionJob:
        return InsertLesionJob(request=request, upload=upload, formats=formats, deliver=deliver, masks=masks)


class ResultLink(BaseModel):
    name: str
    media_type: str
    size: int
    sha256: str
    url: str


class ErrorInfo(BaseModel):
    error: str
    detail: str
    http_status: int | None = None


class JobProgressInfo(BaseModel):
    stage: str | None = None
    step: int | None = None
    total: int | None = None
    fraction: float = 0.0
    eta_s: float | None = None
    elapsed_s: float | None = None


class InstanceDelivery(BaseModel):
    """One DICOM result on its way to one PACS."""

    file: str
    sop_instance_uid: str
    sop_class_uid: str
    destination: str
    status: Literal["pending", "retrying", "delivered", "failed"]
    attempts: int
    error: str | None = None
    delivered_at: float | None = None


class DeliveryInfo(BaseModel):
    """Where a job's DICOM results go and how far they got (retried with backoff; files stay either way)."""

    status: Literal["pending", "delivering", "retrying", "delivered", "failed"]
    destinations: list[str]
    attempts: int
    max_attempts: int
    next_attempt_at: float | None = None
    updated_at: float | None = None
    instances: list[InstanceDelivery] = Field(default_factory=list)


class WebhookAttempt(BaseModel):
    at: float
    status_code: int | None = None
    error: str | None = None
    duration_s: float | None = None


class WebhookInfo(BaseModel):
    """The callback of a job: waiting for the end, then each delivery attempt (retried with backoff)."""

    url: str
    status: Literal["waiting", "retrying", "delivered", "failed"]
    event: str | None = None
    attempts: list[WebhookAttempt] = Field(default_factory=list)
    delivered_at: float | None = None
    next_attempt_at: float | None = None


class JobInfo(BaseModel):
    """GET /jobs/{id}: everything a client polls for."""

    id: str
    kind: str
    status: JobState
    rq_status: str = Field(description="The underlying RQ status (queued, started, finished, failed, stopped, ...).")
    priority: Priority = "normal"
    queue_position: int | None = Field(
        default=None, description="0 = next; only while queued. Counts the queued jobs of higher priority too."
    )
    progress: JobProgressInfo = Field(default_factory=JobProgressInfo)
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    retries_left: int | None = None
    cancel_requested: bool = False
    error: ErrorInfo | None = None
    results: list[ResultLink] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict, description="Model, seed, stats the job reported.")
    delivery: DeliveryInfo | None = Field(default=None, description="PACS delivery of the DICOM results, if any.")
    webhook: WebhookInfo | None = Field(default=None, description="The callback_url delivery, if the job has one.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2c...",
                    "kind": "generate",
                    "status": "running",
                    "rq_status": "started",
                    "queue_position": None,
                    "progress": {"stage": "patch", "step": 12, "total": 50, "fraction": 0.61, "eta_s": 41.0},
                    "results": [],
                }
            ]
        }
    )


class JobAccepted(BaseModel):
    id: str
    status: JobState
    location: str
    replayed: bool = Field(default=False, description="True: an earlier request with this Idempotency-Key made it.")


class ModelInfo(BaseModel):
    kind: str
    path: str | None = Field(default=None, description="The bundle's folder name (never a server path).")
    loaded: bool
    name: str | None = None
    version: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    workers: list[str] = Field(default_factory=list)


class ModelsInfo(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: bool | None = None
    workers: int | None = None
    queue: str | None = None
    detail: str | None = None
