"""The one route table: every request, the hot completion endpoints and the rest alike, is
matched here and nowhere else. Exact paths are one dict lookup; the few paths with a
parameter are matched by prefix. Unknown paths and methods, and errors no endpoint
handled, are answered in the OpenAI error envelope (Anthropic's under /v1/messages).
Middleware, if any, wraps this whole table as plain ASGI, so it applies to every endpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from gateway.apis import error_body_for
from gateway.errors import GatewayError, MethodNotAllowed, NoRoute
from gateway.http import respond
from gateway.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("gateway")

Methods = Mapping[str, ASGIApp]  # method -> endpoint


@dataclass(frozen=True, slots=True)
class Prefixed:
    """A path with one trailing parameter: `/v1/affinity/{affinity_id}` is
    Prefixed("/v1/affinity/", "affinity_id", ...); the parameter may hold slashes."""

    prefix: str
    param: str
    methods: Methods


class Routes:
    def __init__(
        self,
        exact: Mapping[str, Methods],
        prefixed: tuple[Prefixed, ...],
        lifespan: Callable[[], AbstractAsyncContextManager[Mapping[str, Any] | None]],
    ) -> None:
        self.exact = exact
        self.prefixed = prefixed
        self.lifespan = lifespan

    def table(self) -> list[tuple[str, str]]:
        """Every (path, method) served, a parameter written as `{name}` (for the docs)."""
        rows = [(path, method) for path, methods in self.exact.items() for method in methods]
        for route in self.prefixed:
            rows += [(f"{route.prefix}{{{route.param}}}", method) for method in route.methods]
        return rows

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.run_lifespan(scope, receive, send)
        # websockets: none served; returning closes the connection

    def match(self, scope: Scope) -> Methods | None:
        path: str = scope["path"]
        methods = self.exact.get(path)
        if methods is not None:
            return methods
        for route in self.prefixed:
            if path.startswith(route.prefix) and len(path) > len(route.prefix):
                scope["path_params"] = {route.param: path[len(route.prefix):]}
                return route.methods
        return None

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        methods = self.match(scope)
        if methods is None:
            error: GatewayError = NoRoute(f"no route for {scope['path']}", code="not_found")
            await respond(send, error.status, error_body_for(scope["path"], error), [])
            return
        endpoint = methods.get(scope["method"])
        if endpoint is None:
            error = MethodNotAllowed("Method Not Allowed", code="method_not_allowed")
            allow = [(b"allow", ", ".join(methods).encode())]
            await respond(send, error.status, error_body_for(scope["path"], error), allow)
            return
        tracked = _Tracked(send)
        try:
            await endpoint(scope, receive, tracked)
        except Exception:
            # A bug: the endpoints answer every request problem themselves.
            logger.exception("unhandled error on %s", scope["path"])
            if not tracked.started:
                internal = GatewayError("internal gateway error", code="internal_error")
                await respond(send, 500, error_body_for(scope["path"], internal), [])

    async def run_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol around one async context manager; what it yields goes
        into the lifespan state the server hands to every connection (`scope["state"]`)."""
        await receive()  # lifespan.startup
        manager = self.lifespan()
        try:
            state = await manager.__aenter__()
            if state:
                if "state" not in scope:
                    raise RuntimeError("the ASGI server does not support lifespan state")
                scope["state"].update(state)
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            raise
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            await manager.__aexit__(None, None, None)
        except Exception as exc:
            await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
            raise
        await send({"type": "lifespan.shutdown.complete"})


class _Tracked:
    """A `send` that remembers whether the response has begun (so a 500 can still be sent)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = True
        await self.send(message)

