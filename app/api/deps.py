"""Dependencies as `Annotated` aliases: a route's signature states what it needs, tests override them."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from redis import Redis
from rq import Queue

from app.api.metrics import Metrics
from app.api.state import ServiceState
from app.settings import Settings
from models.errors import UnauthorizedError
from workers.store import ResultStore


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


StateDep = Annotated[ServiceState, Depends(get_state)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


def get_connection(state: StateDep) -> Redis:
    return state.connection


def get_queue(state: StateDep) -> Queue:
    return state.queue


def get_store(state: StateDep) -> ResultStore:
    return state.store


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_connection)]
QueueDep = Annotated[Queue, Depends(get_queue)]
StoreDep = Annotated[ResultStore, Depends(get_store)]


def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="Required when the server sets MAMMOGEN_API_KEY.")] = None,
) -> str:
    """Returns the caller's principal (a key fingerprint, for idempotency scoping); 401 otherwise.

    The comparison is constant-time (`hmac.compare_digest`) so response timing leaks nothing.
    """
    expected = settings.api_key.get_secret_value() if settings.api_key is not None else None
    if expected is None:
        return ""
    given = (x_api_key or "").encode()
    if not hmac.compare_digest(given, expected.encode()):
        raise UnauthorizedError("missing or wrong X-API-Key")
    return hmac.new(b"mammogen-principal", given, "sha256").hexdigest()[:16]


ApiKeyDep = Annotated[str, Depends(require_api_key)]


def require_metrics_access(
    settings: SettingsDep,
    x_api_key: Annotated[
        str | None, Header(description="Required when a key is set, unless metrics are public.")
    ] = None,
) -> None:
    """/metrics reveals load and job counts: behind the key when one is set, unless `metrics_public`."""
    if not settings.metrics_public:
        require_api_key(settings, x_api_key)


MetricsAccessDep = Annotated[None, Depends(require_metrics_access)]
IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Send the same key when retrying a POST: the job is created once and returned again.",
    ),
]
