"""POST /generate: MAMBO full-resolution images or dual-view CC + MLO pairs."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.admission import (
    accepted,
    admit_cost,
    check_callback,
    check_generate_request,
    check_output_size,
    ensure_model_available,
    resolve_delivery,
    timeout_for,
)
from app.api.deps import ApiKeyDep, IdempotencyKeyDep, MetricsDep, StateDep
from app.api.schemas import GenerateRequest, JobAccepted

router = APIRouter(tags=["jobs"])


@router.post(
    "/generate",
    status_code=202,
    response_model=JobAccepted,
    summary="Queue a generation job",
    responses={
        200: {"description": "Replay of an earlier request with the same Idempotency-Key."},
        202: {"description": "Queued; poll the Location."},
        401: {"description": "Missing or wrong X-API-Key."},
        413: {"description": "Requested image exceeds the configured size bounds."},
        422: {"description": "Invalid parameters, or over the cost limit / job timeout (names both numbers)."},
        429: {"description": "Queue full; retry after Retry-After seconds."},
        503: {"description": "The model's bundle is missing."},
    },
)
def generate(
    body: GenerateRequest,
    request: Request,
    response: Response,
    state: StateDep,
    metrics: MetricsDep,
    principal: ApiKeyDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> JobAccepted:
    check_output_size(state, body.height, body.width)
    ensure_model_available(state, body.model)
    check_generate_request(state, body)
    job = body.job(resolve_delivery(state, body.formats, body.deliver))
    cost = admit_cost(state, job)
    sub = state.submitter.submit(
        job,
        client_request=body.client_request(),
        timeout_s=timeout_for(state, cost),
        estimate=cost.to_dict(),
        idempotency=idempotency_key,
        principal=principal,
        priority=body.priority,
        callback_url=check_callback(state, body.callback_url),
    )
    if not sub.replayed:
        metrics.submitted.labels(kind="generate").inc()
    return accepted(request, response, sub)
