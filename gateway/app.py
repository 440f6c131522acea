"""The app factory: wires stores, clients, routes and error handlers. Nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.affinity import AffinityStore, MemoryStore
from gateway.affinity.redis import RedisStore
from gateway.auth import Authenticator
from gateway.config import Config, load_config
from gateway.decider import Decider
from gateway.dispatch import Dispatcher
from gateway.endpoints import (
    AffinityAdmin,
    Completions,
    Document,
    Health,
    MetricsEndpoint,
    Models,
    RoutingDecision,
)
from gateway.errors import ClientError, GatewayError, MethodNotAllowed
from gateway.logs import setup_logging
from gateway.metrics import FLUSH_INTERVAL_S, SERVER_METRICS, Metrics
from gateway.openapi import openapi_document
from gateway.pipeline import ANTHROPIC, OPENAI, Pipeline
from gateway.routing import BuiltinRouter, Router
from gateway.routing.llm import LLMRouter
from gateway.types import ASGIApp, Receive, Scope, Send
from gateway.upstream import UpstreamClient

logger = logging.getLogger("gateway")
CONFIG_ENV = "AFFINITY_GATEWAY_CONFIG"
LOG_LEVEL_ENV = "AFFINITY_GATEWAY_LOG_LEVEL"  # `serve --log-level`, for every worker
PIN_GAUGE_INTERVAL_S = 15.0


def build_store(config: Config) -> AffinityStore:
    routing = config.routing
    if routing.session_cache.type == "redis":
        return RedisStore(routing)
    return MemoryStore(
        routing.session_ttl_seconds, routing.session_max_entries, routing.session_ttl_refresh
    )


ROUTERS: dict[str, Callable[[Config, UpstreamClient], Router]] = {
    "builtin": lambda config, upstream: BuiltinRouter(
        config.preferences, config.routing.router.threshold
    ),
    "llm": LLMRouter.from_config,
}


class FastPaths:
    """The completion endpoints, dispatched before Starlette's router and middleware.

    They are the hot path, parse their own requests and render their own errors, so the
    router's regex matching and two middleware layers would only add time to every turn."""

    def __init__(self, app: Starlette, fast: dict[str, ASGIApp]) -> None:
        self.app = app
        self.fast = fast

    @property
    def routes(self) -> list[BaseRoute]:
        """Every route, the fast ones included (Starlette serves them too, for other methods)."""
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.fast.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(config: Config) -> FastPaths:
    metrics = Metrics()
    store = build_store(config)
    upstream = UpstreamClient(config.upstream)
    router = ROUTERS[config.routing.router.type](config, upstream)
    auth = Authenticator(config.auth, config.routing.session_cache.tenant_header)
    pipeline = Pipeline(
        config, auth, Decider(config, store, router, metrics),
        Dispatcher(config, upstream, metrics), metrics,
    )
    state = {"live": True, "ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Metrics]]:
        await upstream.open()
        await store.open()
        sampler = asyncio.ensure_future(_sample_pins(store, metrics))
        flusher = asyncio.ensure_future(_flush_metrics(metrics))
        state["ready"] = True
        try:
            yield {SERVER_METRICS: metrics}  # uvicorn's lifespan state: gateway/server.py counts drops
        finally:
            state["ready"] = False
            sampler.cancel()
            flusher.cancel()
            try:
                await router.close()
                await store.close()
                await upstream.close()
            finally:
                metrics.close()  # the last counts, and the worker's multiprocess files marked dead

    completions: dict[str, ASGIApp] = {
        "/v1/chat/completions": Completions(pipeline, OPENAI, "chat_completions"),
        "/v1/messages": Completions(pipeline, ANTHROPIC, "messages"),
    }
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in completions.items()),
        Route("/routing/v1/chat/completions",
              RoutingDecision(pipeline, OPENAI, "routing_chat_completions"), methods=["POST"]),
        Route("/routing/v1/messages", RoutingDecision(pipeline, ANTHROPIC, "routing_messages"),
              methods=["POST"]),
        Route("/v1/models", auth.guard("models", Models(config)), methods=["GET"]),
        Route("/v1/affinity/{affinity_id:path}", AffinityAdmin(store, auth),
              methods=["GET", "DELETE"]),
        Route("/healthz", Health(state, "live"), methods=["GET"]),
        Route("/readyz", Health(state, "ready"), methods=["GET"]),
        Route("/metrics", auth.guard("metrics", MetricsEndpoint(metrics.render)), methods=["GET"]),
        Route("/openapi.json", auth.guard("openapi", Document(orjson.dumps(openapi_document(config)))),
              methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    return FastPaths(app, completions)


async def _sample_pins(store: AffinityStore, metrics: Metrics) -> None:
    """The pins gauge comes from the store now and then, never from the request path."""
    while True:
        with contextlib.suppress(Exception):
            metrics.pins.set(await store.count())
        await asyncio.sleep(PIN_GAUGE_INTERVAL_S)


async def _flush_metrics(metrics: Metrics) -> None:
    """Requests add to plain tallies; this moves them into the metrics now and then, so that
    with several workers a scrape answered by one sees the others' counts (at most a second
    behind). Scrapes this worker answers flush first anyway."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        try:
            metrics.flush()
        except Exception:  # a bug, but the next flush must still come
            logger.exception("flushing metrics failed")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (unknown path, wrong method) in the OpenAI envelope."""
    assert isinstance(exc, HTTPException)
    error: GatewayError
    if exc.status_code == 405:
        error = MethodNotAllowed(exc.detail, code="method_not_allowed")
    else:  # an unknown path is a bad request to a missing resource, as OpenAI reports it
        detail = f"no route for {request.url.path}" if exc.status_code == 404 else exc.detail
        error = ClientError(detail, code="not_found" if exc.status_code == 404 else None)
        error.status = exc.status_code
    return Response(error.body(), error.status, exc.headers, media_type="application/json")


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s", request.url.path)
    error = GatewayError("internal gateway error", code="internal_error")
    return Response(error.body(), 500, media_type="application/json")


def app_from_env() -> ASGIApp:
    """uvicorn's factory for `serve`, run in every worker process: the config path and log level
    come from the env. Logging is set up here because worker processes start fresh and uvicorn
    has just applied its own logging config."""
    config = load_config(os.environ[CONFIG_ENV])
    setup_logging(os.environ.get(LOG_LEVEL_ENV) or config.logging.level, config.logging.format)
    return create_app(config)
