"""The one place where typed errors become HTTP responses: ``{"error": code, "detail": message}``.

Status codes come from the error classes in `models.errors` (``http_status``), so the API, the
CLI and the job records agree on what each failure means.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import BadInputError, MammogenError, QueueUnavailableError, UnauthorizedError


def error_response(exc: MammogenError) -> JSONResponse:
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # 429s and the 503s of a busy or unreachable backend
        headers["Retry-After"] = str(int(retry_after))
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "ApiKey"
    if isinstance(exc, QueueUnavailableError):
        headers["Retry-After"] = "5"
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MammogenError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejected.labels(reason=exc.code).inc()
    return error_response(exc)


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    """Redis is the queue: without it nothing can be accepted or looked up, but it is not the client's fault."""
    return error_response(QueueUnavailableError(f"the job queue (Redis) is unreachable: {type(exc).__name__}"))


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (``loc``, ``msg``, ``type``), echoing the input only when it is a plain value:
    the default echoes whole objects, for a multipart form the upload's internals."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for e in exc.errors():
        item: dict[str, Any] = {k: e[k] for k in ("type", "loc", "msg") if k in e}
        if _plain(e.get("input")):
            item["input"] = e.get("input")
        ctx = {k: v for k, v in (e.get("ctx") or {}).items() if _plain(v)}
        if ctx:
            item["ctx"] = ctx
        errors.append(item)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own HTTP errors as it answers them, but for its 400 on a body that cannot be decoded at all
    (bytes that are not JSON text, a broken multipart): a bad input like any other, so the documented 422
    ``ErrorBody`` naming it (schemathesis found the undocumented 400 ``{"detail": ...}`` on POST /generate)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        return await _handle(request, BadInputError(f"the request body cannot be parsed ({exc.detail})"))
    return await http_exception_handler(request, exc)


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 200)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MammogenError, _handle)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(RedisError, _redis_down)
    app.add_exception_handler(StarletteHTTPException, _http_error)
