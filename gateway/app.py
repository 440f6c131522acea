"""The app factory: wires stores, clients, endpoints and the one route table. Nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

import orjson

from gateway.affinity import AffinityStore, MemoryStore, Quotas
from gateway.affinity.redis import RedisStore
from gateway.affinity.responses import build_response_store
from gateway.apis import CHAT, MESSAGES
from gateway.apis.responses import responses_api
from gateway.auth import Authenticator
from gateway.config import Config, load_config
from gateway.decider import Decider
from gateway.dispatch import Dispatcher
from gateway.endpoints import (
    AffinityAdmin,
    Completions,
    CountTokens,
    Document,
    Health,
    MetricsEndpoint,
    Models,
    Reachable,
    RoutingDecision,
)
from gateway.logs import setup_logging
from gateway.metrics import FLUSH_INTERVAL_S, MULTIPROC_ENV, SERVER_METRICS, Metrics
from gateway.openapi import openapi_document
from gateway.pipeline import Pipeline
from gateway.routes import Methods, Prefixed, Routes
from gateway.routing import BuiltinRouter, Router
from gateway.routing.llm import LLMRouter
from gateway.sessions import Sessions
from gateway.stored_responses import StoredResponses
from gateway.tracing import build_tracer
from gateway.upstream import UpstreamClient

logger = logging.getLogger("gateway")
CONFIG_ENV = "AFFINITY_GATEWAY_CONFIG"
LOG_LEVEL_ENV = "AFFINITY_GATEWAY_LOG_LEVEL"  # `serve --log-level`, for every worker
PIN_GAUGE_INTERVAL_S = 15.0


def build_store(config: Config, metrics: Metrics) -> AffinityStore:
    routing = config.routing
    quotas = Quotas.from_config(config)
    if routing.session_cache.type == "redis":
        return RedisStore(routing, quotas=quotas,
                          on_state=lambda state: metrics.store_state("redis", state == "up"))
    metrics.store_state("memory", True)
    return MemoryStore(
        routing.session_ttl_seconds, routing.session_max_entries, routing.session_ttl_refresh,
        quotas=quotas,
    )


ROUTERS: dict[str, Callable[[Config, UpstreamClient], Router]] = {
    "builtin": lambda config, upstream: BuiltinRouter(
        config.preferences, config.routing.router.threshold
    ),
    "llm": LLMRouter.from_config,
}


def create_app(config: Config, multiprocess_dir: str | None = None) -> Routes:
    """`multiprocess_dir`: where `serve --workers N` keeps the workers' metric files."""
    metrics = Metrics(multiprocess_dir, models=config.models)
    tracer = build_tracer(config.tracing, metrics)  # None when tracing is off: nothing is wrapped
    store = build_store(config, metrics)
    response_store = build_response_store(config)
    responses = responses_api(response_store, config.limits.max_messages)
    upstream = UpstreamClient(config.upstream)
    router = ROUTERS[config.routing.router.type](config, upstream)
    if tracer is not None:
        store, router = tracer.traced_store(store), tracer.traced_router(router)
    auth = Authenticator(config.auth, config.routing.session_cache.tenant_header)
    decider = Decider(config, store, router, metrics)
    dispatcher = Dispatcher(config, upstream, decider, store, metrics, tracer)
    sessions = Sessions(config)
    pipeline = Pipeline(config, auth, decider, dispatcher, metrics, sessions, tracer)
    state = {"live": True, "ready": False}

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[dict[str, Metrics]]:
        await upstream.open()
        await store.open()
        await response_store.open()
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
                await response_store.close()
                await upstream.close()
            finally:
                if tracer is not None:
                    await tracer.close()  # the last spans out, within the export timeout
                metrics.close()  # the last counts, and the worker's multiprocess files marked dead

    exact: dict[str, Methods] = {
        "/v1/chat/completions": {"POST": Completions(pipeline, CHAT)},
        "/v1/messages": {"POST": Completions(pipeline, MESSAGES)},
        "/v1/messages/count_tokens": {"POST": CountTokens(pipeline)},
        "/routing/v1/chat/completions": {"POST": RoutingDecision(pipeline, CHAT)},
        "/routing/v1/messages": {"POST": RoutingDecision(pipeline, MESSAGES)},
        "/v1/responses": {"POST": Completions(pipeline, responses)},
        "/routing/v1/responses": {"POST": RoutingDecision(pipeline, responses)},
        "/v1/models": {"GET": auth.guard("models", Models(config))},
        "/healthz": {"GET": Health(state, "live")},
        "/readyz": {"GET": Health(state, "ready", store)},
        "/openapi.json": {"GET": auth.guard("openapi", Document(orjson.dumps(openapi_document(config))))},
        "/": {"HEAD": Reachable(), "GET": Reachable()},
    }
    if config.metrics_enabled:  # `metrics: {enabled: false}`: not served (404)
        exact["/metrics"] = {"GET": auth.guard(
            "metrics", MetricsEndpoint(metrics.render, metrics.render_openmetrics if tracer else None))}
    admin = AffinityAdmin(store, auth, decider.lanes, config)
    stored = StoredResponses(response_store, auth, metrics, config, upstream)
    prefixed = (
        Prefixed("/v1/affinity/", "affinity_id", {"GET": admin, "DELETE": admin}),
        Prefixed("/v1/responses/", "response_id", {"GET": stored, "DELETE": stored}),
    )
    if tracer is not None:  # each traced endpoint in its server span
        return Routes(*tracer.instrument(exact, prefixed), lifespan)
    return Routes(exact, prefixed, lifespan)


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


def app_from_env() -> Routes:
    """uvicorn's factory for `serve`, run in every worker process: the config path, log level
    and metrics directory come from the env. Logging is set up here because worker processes
    start fresh and uvicorn has just applied its own logging config."""
    config = load_config(os.environ[CONFIG_ENV])
    setup_logging(os.environ.get(LOG_LEVEL_ENV) or config.logging.level, config.logging.format)
    return create_app(config, os.environ.get(MULTIPROC_ENV) or None)
