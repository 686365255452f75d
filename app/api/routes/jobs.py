"""GET /jobs/{id} (status, progress, ETA, queue position, timings, error, result links) and DELETE."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from rq.exceptions import InvalidJobOperation
from starlette.concurrency import run_in_threadpool

from app.api.deps import ApiKeyDep, MetricsDep, StateDep
from app.api.jobview import TERMINAL, fetch_job, job_info
from app.api.schemas import JobInfo
from app.api.state import ServiceState
from app.api.waiting import JobWatcher
from workers.progress import request_cancel
from workers.queueing import cancel_key

router = APIRouter(tags=["jobs"])


def _base(request: Request) -> str:
    """Result URLs are relative, or absolute from the configured public base: never from the Host header."""
    return request.app.state.settings.public_base_url or ""


#: A wait (long-poll or stream) takes one of the bounded waiter slots.
WAIT_REFUSED = {429: {"description": "Too many waiting requests (in all or of this client); retry later."}}


@router.get(
    "/jobs/{job_id}",
    response_model=JobInfo,
    name="get_job",
    summary="Job status, progress and results",
    responses=WAIT_REFUSED,
)
async def get_job(
    job_id: str,
    request: Request,
    state: StateDep,
    principal: ApiKeyDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Long-poll: wait up to this many seconds for the end.")] = 0,
) -> JobInfo:
    """A wait parks a coroutine on the job watcher, never a thread: reads run briefly in the pool."""
    info = await run_in_threadpool(read_info, state, job_id, request)
    if wait == 0 or info.status in TERMINAL:
        return info
    watcher: JobWatcher = request.app.state.watcher
    async with watcher.admitted(waiter_client(principal, request)):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        version = await watcher.version(job_id)
        while not version.final:
            changed = await watcher.next_change(job_id, version, deadline - loop.time())
            if changed is None:
                break
            version = changed
    return await run_in_threadpool(read_info, state, job_id, request)


def read_info(state: ServiceState, job_id: str, request: Request) -> JobInfo:
    """The job's record as the API shows it (blocking: call it in the thread pool from async code)."""
    return job_info(fetch_job(state.connection, job_id), state.connection, _base(request))


def waiter_client(principal: str, request: Request) -> str:
    """Whose waiter slot a wait takes: the API key's, else the address's."""
    if principal:
        return principal
    return request.client.host if request.client else "unknown"


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
