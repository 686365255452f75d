"""GET /jobs/{id} (status, progress, ETA, queue position, timings, error, result links) and DELETE."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from rq.exceptions import InvalidJobOperation

from app.api.deps import ApiKeyDep, MetricsDep, StateDep
from app.api.jobview import TERMINAL, fetch_job, job_info
from app.api.schemas import JobInfo
from workers.progress import request_cancel
from workers.queueing import cancel_key

router = APIRouter(tags=["jobs"])


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/jobs/{job_id}", response_model=JobInfo, name="get_job", summary="Job status, progress and results")
def get_job(
    job_id: str,
    request: Request,
    state: StateDep,
    _: ApiKeyDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Long-poll: wait up to this many seconds for the end.")] = 0,
) -> JobInfo:
    deadline = time.monotonic() + wait
    while True:
        info = job_info(fetch_job(state.connection, job_id), state.connection, _base(request))
        if info.status in TERMINAL or time.monotonic() >= deadline:
            return info
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


@router.delete(
    "/jobs/{job_id}",
    response_model=JobInfo,
    status_code=202,
    summary="Cancel a queued job, stop a running one, or delete a finished one",
    responses={
        202: {"description": "Cancelled (queued) or stopping (running: within one denoising step)."},
        204: {"description": "The job had ended; its record and files are deleted."},
        404: {"description": "Unknown or expired job."},
    },
)
def delete_job(job_id: str, request: Request, state: StateDep, metrics: MetricsDep, _: ApiKeyDep) -> Response | JobInfo:
    job = fetch_job(state.connection, job_id)
    metrics.cancelled.inc()
    info = job_info(job, state.connection, _base(request))
    if info.status in TERMINAL:
        job.delete()
        state.store.delete_job(job_id)
        state.connection.delete(cancel_key(job_id))
        return Response(status_code=204)
    # The flag first: a worker that dequeues the job right now still sees it before its first step.
    request_cancel(state.connection, job_id, ttl_s=state.settings.result_ttl_s)
    if info.status == "queued":
        with contextlib.suppress(InvalidJobOperation):
            job.cancel()
        state.store.delete_job(job_id)
    return job_info(fetch_job(state.connection, job_id), state.connection, _base(request))
