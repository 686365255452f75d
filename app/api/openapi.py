"""The OpenAPI document as the server behaves: every status a route can answer, bounds from Settings.

Clients and the web page are built from this schema, so it must not promise less than the server
refuses. Statuses that follow from how a route is wired are added here from the route itself
(a route that depends on the API key can answer 401, on the service state 503 when Redis is away,
one with a body 413 from the body limit), so a new route is documented by being written.
Deployment bounds (the longest image side) come from the Settings the app was built with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import BaseRoute

from app.api.deps import get_state, require_api_key, require_metrics_access
from app.settings import Settings


class ErrorBody(BaseModel):
    """Every refusal the service makes itself: a code and a message (``models.errors``)."""

    error: str
    detail: str


_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_VALIDATION_REF = {"$ref": "#/components/schemas/HTTPValidationError"}
_DESCRIPTIONS = {
    401: "Missing or wrong X-API-Key.",
    404: "Unknown or expired job, or no such result.",
    413: "Request body over the upload limit.",
    422: "Invalid parameters.",
    429: "Too many requests (queue full or too many waits); retry after Retry-After seconds.",
    503: "The job queue (Redis) is unreachable, or the model's bundle is missing.",
}


def leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, with included routers opened (FastAPI keeps them as one entry each)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from leaf_routes(inner.routes)
        else:
            yield route


def _calls(dependant: Dependant) -> set[Any]:
    out = {dependant.call}
    for sub in dependant.dependencies:
        out |= _calls(sub)
    return out


def _route_statuses(route: APIRoute) -> set[int]:
    calls = _calls(route.dependant)
    statuses: set[int] = set()
    if require_api_key in calls or require_metrics_access in calls:
        statuses.add(401)
    if get_state in calls:
        statuses.add(503)
    if "{job_id}" in route.path:
        statuses.add(404)
    if route.body_field is not None or route.methods & {"POST", "PUT", "PATCH"}:
        statuses.add(413)
    return statuses


def _error_content(status: int, existing: dict[str, Any]) -> dict[str, Any]:
    if status == 422:  # FastAPI's field errors, or a BadInputError naming the problem
        return {"application/json": {"schema": {"anyOf": [_VALIDATION_REF, _ERROR_REF]}}}
    return {"application/json": {"schema": _ERROR_REF}}


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema()
    components.setdefault("HTTPValidationError", _http_validation_error())
    for route in leaf_routes(app.routes):
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            op = schema["paths"].get(route.path_format, {}).get(method.lower())
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            for status in _route_statuses(route):
                responses.setdefault(str(status), {"description": _DESCRIPTIONS[status]})
            for key, response in responses.items():
                refusal = key.isdigit() and int(key) >= 400
                if refusal and ("content" not in response or key == "422"):
                    response["content"] = _error_content(int(key), response)
    generate = schema["components"]["schemas"].get("GenerateRequest", {}).get("properties", {})
    for side in ("height", "width"):
        if side in generate:
            _set_maximum(generate[side], settings.max_image_side)
    return schema


def _http_validation_error() -> dict[str, Any]:
    from fastapi.openapi.utils import validation_error_response_definition

    return validation_error_response_definition


def _set_maximum(prop: dict[str, Any], maximum: int) -> None:
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "integer":
            branch["maximum"] = maximum


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
