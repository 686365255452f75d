"""Request and response models of the HTTP API (pydantic), with the examples OpenAPI shows.

Bounds here are the first line of input safety: FastAPI answers 422 naming the bad field before
anything reaches the queue. Bounds that depend on the deployment (largest image) are checked
against `Settings` in the routes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Sampler = Literal["ddpm", "ddim", "dpmsolver"]
Stitching = Literal["raster", "wavefront", "fused"]
OutputFormat = Literal["png16", "npy", "dicom"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DenoiseParams(_Strict):
    """Sampler settings shared by every job kind."""

    seed: int | None = Field(default=None, ge=0, le=2**63 - 1, description="Random seed; unset: random.")
    steps: int = Field(default=50, ge=1, le=1000, description="Denoising steps per stage.")
    sampler: Sampler = "ddim"
    eta: float = Field(default=0.0, ge=0.0, le=1.0, description="DDIM eta (0 = deterministic).")
    formats: list[OutputFormat] = Field(default_factory=lambda: ["png16"], min_length=1, max_length=3)

    @model_validator(mode="after")
    def _unique_formats(self) -> DenoiseParams:
        self.formats = list(dict.fromkeys(self.formats))
        return self


class GenerateRequest(DenoiseParams):
    """POST /generate: MAMBO full-resolution images or dual-view CC + MLO pairs."""

    model: Literal["mambo", "dualview"] = "mambo"
    height: int | None = Field(default=None, ge=32, description="Output height in pixels; unset: the bundle's size.")
    width: int | None = Field(default=None, ge=32, description="Output width in pixels; unset: the bundle's size.")
    count: int = Field(default=1, ge=1, le=16, description="Images (or CC + MLO pairs) to generate.")
    stitching: Stitching = Field(default="wavefront", description="MAMBO patch order (same result, fewer calls).")
    laterality: Literal["L", "R"] = Field(
        default="R", description="Breast side; the image shows it in standard display (R: chest wall on the right)."
    )
    max_batch: int | None = Field(default=None, ge=1, le=4096, description="Largest model batch (memory bound).")

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


class _FormParams(DenoiseParams):
    """Form fields travel next to the ``file`` part: that one is allowed, any other unknown field is refused."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields) - {"file"})
            if unknown:
                raise ValueError(f"unknown form field(s): {', '.join(unknown)}")
        return data


class SuperResolveParams(_FormParams):
    """Form fields of POST /super-resolve (with the image as the ``file`` part)."""

    scale: int = Field(default=4, ge=2, le=16, description="Upscaling factor (the paper uses 4 and 16).")
    stitching: Stitching = "wavefront"
    stand_in: Literal["auto", "global", "mid"] = Field(
        default="auto", description="What the input replaces: the global image (stages 2+3 run) or the mid image."
    )
    max_batch: int | None = Field(default=None, ge=1, le=4096)


class AnomalyMapParams(_FormParams):
    """Form fields of POST /anomaly-map (with the image as the ``file`` part).

    Defaults follow the stronger recipe: noise to lambda = 700, several seeds, Otsu threshold.
    """

    timestep: int = Field(default=700, ge=1, le=999, description="Noise level lambda the input is noised to.")
    repeats: int = Field(default=3, ge=1, le=16, description="Seeds (seed, seed+1, ...) whose residuals are averaged.")
    threshold_mode: Literal["otsu", "fixed", "percentile"] = "otsu"
    threshold: float | None = Field(default=None, ge=0.0, le=100.0, description="For 'fixed' or 'percentile'.")
    resolution: Literal["global", "full"] = Field(
        default="global", description="global: the paper's s x s map; full: native-resolution patch reconstructions."
    )
    max_batch: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _threshold_given(self) -> AnomalyMapParams:
        if self.threshold_mode != "otsu" and self.threshold is None:
            raise ValueError(f"threshold_mode {self.threshold_mode!r} needs a threshold")
        return self


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


class JobInfo(BaseModel):
    """GET /jobs/{id}: everything a client polls for."""

    id: str
    kind: str
    status: JobState
    rq_status: str = Field(description="The underlying RQ status (queued, started, finished, failed, stopped, ...).")
    queue_position: int | None = Field(default=None, description="0 = next; only while queued.")
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
