"""The FastAPI application: `create_app(settings)` builds it; ``app`` is what uvicorn imports.

The API validates and enqueues; it never runs a model. Its lifespan opens the Redis connection,
the queue, the result store and the watchdog thread that reaps jobs whose worker died.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from redis import Redis

from app import version
from app.api.errors import install_error_handlers
from app.api.intake import DecodeBudget
from app.api.jobview import fetch_job, job_info
from app.api.limits import BodyLimitMiddleware
from app.api.methods import AllowMiddleware
from app.api.metrics import Metrics
from app.api.openapi import install_openapi
from app.api.routes import events, generate, health, jobs, metrics, models, results, uploads, web
from app.api.state import ServiceState
from app.api.waiting import JobWatcher
from app.settings import Settings, get_settings
from models.errors import JobNotFoundError
from workers.queueing import DEFAULT_REDIS_URL, connect, connect_async, make_queue, priority_queues
from workers.store import ResultStore
from workers.submit import Submitter
from workers.watchdog import Watchdog, heartbeat_ttl_s
from workers.webhooks import WebhookLoop

DESCRIPTION = """\
Synthetic mammography as a job service. `POST /generate`, `/super-resolve` or `/anomaly-map`
answer **202** with a `Location`; poll `GET /jobs/{id}` (add `?wait=30` to long-poll) for status,
stage, step, fraction, ETA and queue position; download results from the links it lists
(16-bit PNG, NPY, DICOM marked SYNTHETIC - NOT FOR DIAGNOSTIC USE); `DELETE /jobs/{id}` cancels.
Send `Idempotency-Key` to make a retried POST safe, `X-API-Key` when the server requires one.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connection = connect(settings.redis_url or DEFAULT_REDIS_URL)
        watcher = JobWatcher(
            connect_async(settings.redis_url or DEFAULT_REDIS_URL),
            max_waiters=settings.max_waiters,
            max_waiters_per_client=settings.max_waiters_per_client,
        )
        app.state.watcher = watcher
        app.state.decode_budget = DecodeBudget(settings.decode_memory_mb << 20)
        app_metrics.watch_waiters(watcher)
        await watcher.start()
        queue = make_queue(connection, settings.queue_name)
        store = ResultStore(settings.result_dir)
        submitter = Submitter(
            queue,
            max_queue_length=settings.max_queue_length,
            result_ttl_s=settings.result_ttl_s,
            retries=settings.job_retries,
        )
        app.state.service = ServiceState(settings, connection, queue, store, submitter)
        app_metrics.watch_queue(queue)
        watchdog = Watchdog(
            priority_queues(connection, settings.queue_name),
            store,
            interval_s=max(0.5, settings.heartbeat_s / 4),
            retention_s=settings.result_ttl_s,
            grace_s=heartbeat_ttl_s(settings.heartbeat_s),
        )
        watchdog.start()
        webhooks = start_webhooks(settings, connection)
        try:
            yield
        finally:
            if webhooks is not None:
                webhooks.stop()
            watchdog.stop()
            await watcher.stop()
            connection.close()

    app = FastAPI(
        title="mammogen",
        version=version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
        redirect_slashes=False,  # its redirects are absolute URLs built from the client's Host header
    )
    app.state.metrics = app_metrics
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app, settings)
    for module in (generate, uploads, jobs, events, results, models, health, metrics, web):
        app.include_router(module.router)
    app.mount("/ui", StaticFiles(directory=web.WEB_DIR), name="ui")

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        app_metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        app_metrics.latency.labels(route).observe(time.perf_counter() - t0)
        return response

    def count_oversized() -> None:
        app_metrics.rejected.labels(reason="payload_too_large").inc()

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, on_reject=count_oversized)
    app.add_middleware(AllowMiddleware)
    return app


def start_webhooks(settings: Settings, connection: Redis) -> WebhookLoop | None:
    """The thread that POSTs final records to callback URLs (only when the server signs webhooks)."""
    if settings.webhook_secret is None:
        return None
    base = settings.public_base_url or ""

    def render(job_id: str) -> tuple[str, bytes] | None:
        try:
            info = job_info(fetch_job(connection, job_id), connection, base)
        except JobNotFoundError:
            return None
        return info.status, info.model_dump_json().encode()

    loop = WebhookLoop(
        connection,
        render,
        secret=settings.webhook_secret.get_secret_value().encode(),
        policy=settings.webhook_policy(),
        allowed_hosts=settings.webhook_allowed_hosts,
        timeout_s=settings.webhook_timeout_s,
    )
    loop.start()
    return loop


def __getattr__(name: str) -> FastAPI:
    """``app`` is built on first access, so importing this module reads no settings."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
