"""/healthz (the process answers) and /readyz (Redis reachable and at least one live worker)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import StateDep
from app.api.schemas import Health
from workers.watchdog import live_workers

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the API process is up")
async def healthz() -> Health:
    """Async and free of I/O: it answers while every pool thread is busy."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: Redis reachable and at least one live worker on this queue",
    responses={503: {"model": Health}},
)
def readyz(state: StateDep) -> Health | JSONResponse:
    try:
        state.connection.ping()
        workers = len(live_workers(state.connection, state.queue.name))
    except Exception as exc:  # the address and the driver's words go to the log, not to an unauthenticated probe
        log.warning("readiness: Redis unreachable: %s", exc)
        body = Health(status="unavailable", redis=False, queue=state.queue.name, detail="Redis unreachable")
        return JSONResponse(body.model_dump(), status_code=503)
    if workers == 0:
        body = Health(status="unavailable", redis=True, workers=0, queue=state.queue.name, detail="no live worker")
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", redis=True, workers=workers, queue=state.queue.name)
