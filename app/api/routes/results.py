"""GET /jobs/{id}/results/{name}: download one result file (checksum in the job record and headers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.deps import ApiKeyDep, StateDep
from app.api.jobview import fetch_job
from models.errors import JobNotFoundError

router = APIRouter(tags=["results"])


@router.get(
    "/jobs/{job_id}/results/{name}",
    response_class=FileResponse,
    summary="Download a result file",
    responses={200: {"content": {"image/png": {}, "application/dicom": {}, "application/x-npy": {}}}, 404: {}},
)
def download(job_id: str, name: str, state: StateDep, _: ApiKeyDep) -> FileResponse:
    job = fetch_job(state.connection, job_id)
    value = job.return_value() if job.get_status(refresh=False) == "finished" else None
    files = {f["name"]: f for f in (value or {}).get("files", [])} if isinstance(value, dict) else {}
    if name not in files:
        raise JobNotFoundError(f"job {job_id} has no result {name!r}")
    record = files[name]
    path = state.store.path_of(job_id, name)
    return FileResponse(
        path,
        media_type=record["media_type"],
        filename=name,
        headers={"X-Content-SHA256": record["sha256"], "ETag": f'"{record["sha256"]}"'},
    )
