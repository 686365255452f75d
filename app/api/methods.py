"""``Allow`` lists every method of a resource, on OPTIONS and on 405.

Starlette answers for the first route whose path matches, so GET /jobs/{id} and DELETE /jobs/{id}
(two routes) gave ``Allow: GET`` only. This middleware collects the methods of every route that
matches the path: OPTIONS answers 204 with them, and a 405 carries them all.
"""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.openapi import leaf_routes


class AllowMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _allowed(self, scope: Scope) -> list[str]:
        app = scope.get("app")
        methods: set[str] = set()
        for route in leaf_routes(getattr(app, "routes", [])):
            match, _ = route.matches({**scope, "method": "GET"})
            route_methods = getattr(route, "methods", None)
            if match != Match.NONE and route_methods:
                methods |= set(route_methods)
        return sorted(methods | {"OPTIONS"}) if methods else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = self._allowed(scope)
        if scope["method"] == "OPTIONS" and allowed:
            await send(
                {"type": "http.response.start", "status": 204, "headers": [(b"allow", ", ".join(allowed).encode())]}
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405 and allowed:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", ", ".join(allowed).encode())]}
            await send(message)

        await self.app(scope, receive, send_allow)
