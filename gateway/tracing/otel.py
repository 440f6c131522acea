"""The OpenTelemetry tracer behind `gateway.tracing.Tracer` (the `[tracing]` extra).

Each replica has its own TracerProvider (never the global one: replicas in one process, as
in tests, stay apart). A request's spans find each other through OpenTelemetry's context: the
server span's wrapper (tracing/asgi.py) makes a `RequestSpans` current for the request's task,
and the store, the router, the dispatcher and the pipeline's end, all running in that task or
in one it started, read it. Outside a sampled request every entry point returns at once.

Attributes follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`); the gateway's
own are `affinity.*` and `gateway.*`. `gen_ai.conversation.id` is the pin key, a hash of
tenant and session id: the raw affinity id is never recorded. Prompts are recorded only
with `capture_content: true`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Span, SpanKind, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.config import ModelProvider, TracingConfig
from gateway.metrics import Metrics
from gateway.tracing.export import CountingBatchSpanProcessor, CountingExporter, otlp_exporter, shut_down

if TYPE_CHECKING:
    from gateway.affinity import AffinityStore
    from gateway.context import RequestContext
    from gateway.routes import Methods, Prefixed
    from gateway.routing import Router

SERVICE_NAME = "affinity-gateway"
OPERATION = "chat"  # every completion endpoint is a chat, in the conventions' terms
# What the attempt that served shares with the server span (its own request model is the
# provider's id, not the one the client asked for).
ON_ATTEMPT = frozenset({
    "gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
    "gen_ai.conversation.id",
})
MAX_CONTENT_CHARS = 64 * 1024  # a captured prompt beyond this is cut (span attribute limits)


@dataclass(slots=True)
class RequestSpans:
    """One traced request's open spans: the server span, and the attempt serving it."""

    server: Span
    attempt: Span | None = None


class AttemptSpan:
    __slots__ = ("span", "spans")

    def __init__(self, span: Span, spans: RequestSpans) -> None:
        self.span = span
        self.spans = spans

    def answered(self, status: int) -> None:
        self.span.set_attribute("http.response.status_code", status)
        if not 200 <= status < 300:
            self._end_failed(str(status))

    def failed(self, reason: str) -> None:
        self._end_failed(reason)

    def _end_failed(self, error: str) -> None:
        self.span.set_attribute("error.type", error)
        self.span.set_status(StatusCode.ERROR)
        self.span.end()
        if self.spans.attempt is self.span:
            self.spans.attempt = None


class OtelTracer:
    def __init__(self, config: TracingConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.ratio = config.sample_ratio
        self.capture_content = config.capture_content
        # The gateway samples the traces it starts (`sample_root`); a client's traceparent
        # carries its own decision, which the parent-based sampler follows.
        self.provider = TracerProvider(
            sampler=ParentBased(ALWAYS_ON), resource=resource(config), shutdown_on_exit=False
        )
        self.exporter = CountingExporter(otlp_exporter(config), metrics)
        self.provider.add_span_processor(CountingBatchSpanProcessor(self.exporter, config, metrics))
        self.tracer = self.provider.get_tracer("affinity-gateway")
        self.propagator = TraceContextTextMapPropagator()
        self.key = otel_context.create_key("affinity-gateway-request")
        self.servers: dict[str, tuple[str, int]] = {}  # api_base -> (host, port)

    # Wiring (create_app): the route table, the store and the router.

    def instrument(
        self, exact: Mapping[str, Methods], prefixed: tuple[Prefixed, ...]
    ) -> tuple[dict[str, Methods], tuple[Prefixed, ...]]:
        from gateway.tracing.asgi import instrument

        return instrument(self, exact, prefixed)

    def traced_store(self, store: AffinityStore) -> AffinityStore:
        from gateway.tracing.wrappers import TracedStore

        return TracedStore(store, self)

    def traced_router(self, router: Router) -> Router:
        from gateway.tracing.wrappers import TracedRouter

        return TracedRouter(router, self)

    async def close(self) -> None:
        await shut_down(self.provider.shutdown, self.exporter.shutdown, self.config)

    # The request path.

    def sample_root(self) -> bool:
        """Whether to trace a request that brings no traceparent."""
        return self.ratio >= 1.0 or random.random() < self.ratio

    def current(self) -> RequestSpans | None:
        spans = otel_context.get_value(self.key)
        return spans if isinstance(spans, RequestSpans) else None

    def child(self, name: str, attributes: dict[str, Any]) -> Span | None:
        """An internal span under the current request's, or None outside a traced request."""
        if self.current() is None:
            return None
        return self.tracer.start_span(name, attributes=attributes)

    def attempt(self, provider: ModelProvider, attempt: int, headers: dict[str, str]) -> AttemptSpan | None:
        spans = self.current()
        if spans is None:
            return None
        host, port = self.server_of(provider.api_base)
        span = self.tracer.start_span(
            f"{OPERATION} {provider.model_id}", kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": OPERATION,
                "gen_ai.provider.name": provider.provider,
                "gen_ai.request.model": provider.model_id,
                "server.address": host,
                "server.port": port,
                "gateway.model": provider.model,
                "gateway.attempt": attempt,
            },
        )
        self.propagator.inject(headers, context=set_span_in_context(span))
        if spans.attempt is not None:  # an attempt left open: never, but never leak a span
            spans.attempt.end()
        spans.attempt = span
        return AttemptSpan(span, spans)

    def server_of(self, api_base: str) -> tuple[str, int]:
        server = self.servers.get(api_base)
        if server is None:
            parts = urlsplit(api_base)
            server = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
            self.servers[api_base] = server
        return server

    def first_token(self, model: str, seconds: float) -> None:
        spans = self.current()
        if spans is None or not spans.server.is_recording():
            return
        event = {"gateway.time_to_first_token_s": seconds}
        spans.server.add_event("first_token", event)
        if spans.attempt is not None:
            spans.attempt.add_event("first_token", event)
        label = self.metrics.model_label(model)
        self.metrics.exemplar(self.metrics.ttft, (label,), trace_id(spans.server), seconds)

    def record(self, ctx: RequestContext) -> None:
        spans = self.current()
        if spans is None:
            return
        attempt, spans.attempt = spans.attempt, None
        server = spans.server
        if not server.is_recording():
            if attempt is not None:
                attempt.end()
            return
        outcome = self.outcome(ctx)
        server.set_attributes(outcome)
        if ctx.status >= 500:
            server.set_status(StatusCode.ERROR)
        if attempt is not None:
            attempt.set_attributes({k: v for k, v in outcome.items() if k in ON_ATTEMPT})
            attempt.end()
        elapsed = time.perf_counter() - ctx.started
        self.metrics.exemplar(self.metrics.request_duration, (ctx.endpoint,), trace_id(server), elapsed)

    def outcome(self, ctx: RequestContext) -> dict[str, Any]:
        """The request's GenAI and affinity attributes, from what its context collected."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION, "gateway.request.id": ctx.request_id,
        }
        request, plan, served, usage = ctx.request, ctx.plan, ctx.served, ctx.usage
        if request is not None:
            if request.requested_model:
                attributes["gen_ai.request.model"] = request.requested_model
            attributes["gateway.stream"] = request.stream
            if self.capture_content:
                attributes["gen_ai.input.messages"] = input_messages(request.payload)
        if plan is not None:
            attributes["affinity.status"] = plan.status
            attributes["affinity.source"] = plan.source  # header, claude-code, codex, ... or none
            attributes["gateway.decision.source"] = plan.decision.source  # router, affinity, fallback
            attributes["gateway.route"] = plan.decision.route or ""
            attributes["gateway.model"] = plan.decision.model
            if plan.key is not None:
                attributes["gen_ai.conversation.id"] = plan.key
            if plan.rerouted_from is not None:
                attributes["gateway.rerouted_from"] = plan.rerouted_from
        if served is not None:
            attributes["gen_ai.provider.name"] = served.provider.provider
            attributes["gen_ai.response.model"] = served.provider.model_id
            attributes["gateway.model"] = served.provider.model
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
            attributes["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
        return attributes


def trace_id(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def input_messages(payload: dict[str, Any]) -> str:
    """The prompt as the client sent it (its system text and messages), as JSON."""
    sent = {key: payload[key] for key in ("system", "messages") if key in payload}
    return orjson.dumps(sent).decode()[:MAX_CONTENT_CHARS]


def version() -> str:
    try:
        return metadata.version("affinity-gateway")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def resource(config: TracingConfig) -> Resource:
    """service.name: the config's, else OTEL_SERVICE_NAME (in `config.service_name` already),
    else OTEL_RESOURCE_ATTRIBUTES' (Resource.create reads it), else affinity-gateway."""
    attributes: dict[str, Any] = {
        "service.version": version(),
        "service.instance.id": os.urandom(8).hex(),  # replicas apart, even in one process
    }
    if config.service_name:
        attributes["service.name"] = config.service_name
    created = Resource.create(attributes)
    if str(created.attributes.get("service.name", "")).startswith("unknown_service"):
        created = created.merge(Resource({"service.name": SERVICE_NAME}))
    return created
