"""GET /jobs/{id}/events: the job's progress as Server-Sent Events, ending with its final record.

The stream is a coroutine parked on the job watcher (`app.api.waiting`), never a thread, and takes
one waiter slot for as long as it is open (bounded like long-polls: 429 past the bound). Each
event's id is the watcher's version digest of the job: a client that reconnects with
``Last-Event-ID`` gets the current state only if it changed since the event it last saw.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import ApiKeyDep, StateDep
from app.api.jobview import TERMINAL
from app.api.routes.jobs import WAIT_REFUSED, read_info, waiter_client
from app.api.schemas import JobInfo
from app.api.state import ServiceState
from app.api.waiting import JobWatcher
from models.errors import JobNotFoundError

router = APIRouter(tags=["jobs"])

#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0


#: One event of the stream (its data is the job record as JSON, or for ``gone`` an error body).
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string", "enum": ["progress", "final", "gone"]},
        "data": {"type": "string"},
    },
    "required": ["event", "data"],
}


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    summary="Live progress as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
            "description": "`progress` events (the job record) on each change, then one `final` event "
            "(the final record with result links) and the end of the stream; `gone` when the job is deleted.",
        },
        **WAIT_REFUSED,
    },
)
async def job_events(
    job_id: str,
    request: Request,
    state: StateDep,
    principal: ApiKeyDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after this event.")
    ] = None,
) -> StreamingResponse:
    info = await run_in_threadpool(read_info, state, job_id, request)  # 404 before the stream starts
    watcher: JobWatcher = request.app.state.watcher
    slot = watcher.admitted(waiter_client(principal, request))
    await slot.__aenter__()  # 429 now, as a status, not inside a started stream
    stream = _stream(watcher, state, job_id, request, info, last_event_id)
    return StreamingResponse(
        _released(stream, slot),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _released(
    stream: AsyncIterator[bytes], slot: contextlib.AbstractAsyncContextManager[None]
) -> AsyncIterator[bytes]:
    """The waiter slot is held until the stream ends or the client goes away."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await slot.__aexit__(None, None, None)


async def _stream(
    watcher: JobWatcher, state: ServiceState, job_id: str, request: Request, info: JobInfo, last_seen: str | None
) -> AsyncIterator[bytes]:
    version = await watcher.version(job_id)
    if info.status in TERMINAL:
        yield sse("final", info.model_dump_json(), version.digest)
        return
    if version.digest != last_seen:
        yield sse("progress", info.model_dump_json(), version.digest)
    while True:
        changed = await watcher.next_change(job_id, version, KEEPALIVE_S)
        if changed is None:
            yield b": keep-alive\n\n"
            continue
        version = changed
        try:
            info = await run_in_threadpool(read_info, state, job_id, request)
        except JobNotFoundError as exc:
            yield sse("gone", json.dumps(exc.to_dict()), version.digest)
            return
        if info.status in TERMINAL:
            yield sse("final", info.model_dump_json(), version.digest)
            return
        yield sse("progress", info.model_dump_json(), version.digest)
