"""POST /super-resolve and POST /anomaly-map: a DICOM or PNG/TIFF upload plus form parameters.

The body is capped while it streams (`app.api.limits`); here the bytes are sniffed (never the
declared content type or file name), the header bounds checked, and the whole image decoded
once, so a truncated or hostile file is refused with a 4xx naming the problem and nothing of
it is stored or queued.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from app.api.admission import (
    accepted,
    check_output_size,
    check_superres_request,
    ensure_model_available,
    timeout_for,
)
from app.api.deps import ApiKeyDep, IdempotencyKeyDep, MetricsDep, StateDep
from app.api.schemas import AnomalyMapParams, JobAccepted, SuperResolveParams
from app.api.state import ServiceState
from models.errors import BadInputError, NotBuiltError
from models.imaging.readers import read_image

router = APIRouter(tags=["jobs"])

SUFFIX = {"dicom": ".dcm", "png": ".png", "tiff": ".tif"}

_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Replay of an earlier request with the same Idempotency-Key."},
    202: {"description": "Queued; poll the Location."},
    401: {"description": "Missing or wrong X-API-Key."},
    413: {"description": "Upload larger than the limit, or image larger than the pixel bounds."},
    415: {"description": "Not a DICOM, PNG or TIFF image (sniffed from the content)."},
    422: {"description": "Invalid parameters, or a truncated/corrupt image."},
    429: {"description": "Queue full; retry after Retry-After seconds."},
    501: {"description": "This version does not include the feature."},
    503: {"description": "The model's bundle is missing."},
}


def _require(module: str, feature: str) -> None:
    """501 before anything is stored when this version lacks the feature's pipeline."""
    if importlib.util.find_spec(module) is None:
        raise NotBuiltError(f"{feature} is not built into this version of mammogen ({module} is missing)")


def _validated_upload(state: ServiceState, upload: UploadFile) -> tuple[bytes, dict[str, Any]]:
    data = upload.file.read()
    if not data:
        raise BadInputError("the uploaded file is empty")
    s = state.settings
    image, info = read_image(data, max_pixels=s.max_image_pixels, max_side=s.max_image_side)
    return data, {
        "input_format": info.format,
        "input_height": int(image.shape[0]),
        "input_width": int(image.shape[1]),
        "input_sha256": hashlib.sha256(data).hexdigest(),
        "input_name": f"input{SUFFIX[info.format]}",
    }


def _submit(
    kind: str,
    state: ServiceState,
    params: dict[str, Any],
    data: bytes,
    idempotency_key: str | None,
    principal: str,
) -> Any:
    def store_upload(job_id: str) -> dict[str, Any]:
        state.store.save_upload(job_id, io.BytesIO(data), SUFFIX[params["input_format"]])
        return {}

    return state.submitter.submit(
        kind,
        params,
        timeout_s=timeout_for(state, kind, params),
        idempotency=idempotency_key,
        principal=principal,
        prepare=store_upload,
        discard=state.store.delete_job,
    )


@router.post(
    "/super-resolve",
    status_code=202,
    response_model=JobAccepted,
    summary="Queue a super-resolution job",
    responses=_UPLOAD_RESPONSES,
)
def super_resolve(
    request: Request,
    response: Response,
    state: StateDep,
    metrics: MetricsDep,
    principal: ApiKeyDep,
    params: Annotated[SuperResolveParams, Form()],
    file: Annotated[UploadFile, File(description="Low-resolution mammogram: DICOM, 8/16-bit PNG or TIFF.")],
    idempotency_key: IdempotencyKeyDep = None,
) -> JobAccepted:
    _require("models.superres", "super-resolution")
    data, info = _validated_upload(state, file)
    check_output_size(state, info["input_height"], info["input_width"], factor=params.scale)
    ensure_model_available(state, "mambo")
    check_superres_request(state, info["input_height"], info["input_width"], params.scale)
    sub = _submit("super-resolve", state, {**params.model_dump(), **info}, data, idempotency_key, principal)
    if not sub.replayed:
        metrics.submitted.labels(kind="super-resolve").inc()
    return accepted(request, response, sub)


@router.post(
    "/anomaly-map",
    status_code=202,
    response_model=JobAccepted,
    summary="Queue an anomaly-map job",
    responses=_UPLOAD_RESPONSES,
)
def anomaly_map(
    request: Request,
    response: Response,
    state: StateDep,
    metrics: MetricsDep,
    principal: ApiKeyDep,
    params: Annotated[AnomalyMapParams, Form()],
    file: Annotated[UploadFile, File(description="Mammogram to analyse: DICOM, 8/16-bit PNG or TIFF.")],
    idempotency_key: IdempotencyKeyDep = None,
) -> JobAccepted:
    data, info = _validated_upload(state, file)
    ensure_model_available(state, "mambo")
    sub = _submit("anomaly-map", state, {**params.model_dump(), **info}, data, idempotency_key, principal)
    if not sub.replayed:
        metrics.submitted.labels(kind="anomaly-map").inc()
    return accepted(request, response, sub)
