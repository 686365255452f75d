"""GET /jobs/{id}/results/{name}: download one result file (checksum in the job record and headers)."""

from __future__ import annotations

import io
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse
from PIL import Image

from app.api.deps import ApiKeyDep, StateDep
from app.api.jobview import fetch_job
from app.api.state import ServiceState
from models.errors import BadInputError, JobNotFoundError

router = APIRouter(tags=["results"])


def _result(state: ServiceState, job_id: str, name: str) -> dict[str, Any]:
    job = fetch_job(state.connection, job_id)
    value = job.return_value() if job.get_status(refresh=False) == "finished" else None
    files = {f["name"]: f for f in (value or {}).get("files", [])} if isinstance(value, dict) else {}
    if name not in files:
        raise JobNotFoundError(f"job {job_id} has no result {name!r}")
    return files[name]


@router.get(
    "/jobs/{job_id}/results/{name}",
    response_class=FileResponse,
    summary="Download a result file",
    responses={200: {"content": {"image/png": {}, "application/dicom": {}, "application/x-npy": {}}}, 404: {}},
)
def download(job_id: str, name: str, state: StateDep, _: ApiKeyDep) -> FileResponse:
    record = _result(state, job_id, name)
    path = state.store.path_of(job_id, name)
    return FileResponse(
        path,
        media_type=record["media_type"],
        filename=name,
        headers={"X-Content-SHA256": record["sha256"], "ETag": f'"{record["sha256"]}"'},
    )


@router.get(
    "/jobs/{job_id}/results/{name}/preview",
    response_class=Response,
    summary="An 8-bit PNG preview of a PNG result, windowed (for viewing 16-bit images in a browser)",
    responses={200: {"content": {"image/png": {}}}, 422: {"description": "Not a PNG result."}},
)
def preview(
    job_id: str,
    name: str,
    state: StateDep,
    _: ApiKeyDep,
    level: Annotated[float, Query(ge=0, le=1, description="Window centre, as a fraction of full scale.")] = 0.5,
    window: Annotated[float, Query(gt=0, le=1, description="Window width, as a fraction of full scale.")] = 1.0,
) -> Response:
    """Window/level on the server: the browser shows 8 bits; the download keeps all 16."""
    record = _result(state, job_id, name)
    if record["media_type"] != "image/png":
        raise BadInputError(f"{name} is not a PNG result; previews are of PNG results")
    with Image.open(state.store.path_of(job_id, name)) as im:
        array = np.asarray(im)
    if array.ndim == 3:  # an RGB overlay: shown as it is
        out = Image.fromarray(array.astype(np.uint8))
    else:
        full = 65535.0 if array.dtype == np.uint16 else 255.0
        scaled = (array.astype(np.float32) / full - (level - window / 2)) / window
        out = Image.fromarray(np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})
