"""Server spans: each traced endpoint of the route table is wrapped, so a request gets one
SERVER span named by its route (`POST /v1/chat/completions`, `GET /v1/affinity/{affinity_id}`:
the template, never the id), continuing the client's W3C trace when it sends a `traceparent`.
Probes, /metrics and the documents are not traced. Imported only when tracing is on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode, set_span_in_context

from gateway.routes import Methods, Prefixed
from gateway.tracing.otel import RequestSpans
from gateway.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.tracing.otel import OtelTracer

UNTRACED = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/"})
PROPAGATED = (b"traceparent", b"tracestate")


def instrument(
    tracer: OtelTracer, exact: Mapping[str, Methods], prefixed: tuple[Prefixed, ...]
) -> tuple[dict[str, Methods], tuple[Prefixed, ...]]:
    def wrap(route: str, methods: Methods) -> Methods:
        return {method: ServerSpan(tracer, method, route, app) for method, app in methods.items()}

    traced = {path: methods if path in UNTRACED else wrap(path, methods) for path, methods in exact.items()}
    routes = tuple(
        Prefixed(r.prefix, r.param, wrap(f"{r.prefix}{{{r.param}}}", r.methods)) for r in prefixed
    )
    return traced, routes


class ServerSpan:
    """One endpoint under a server span, current for the request's task (and the tasks it
    starts) so the store, the router, the dispatcher and the pipeline find it."""

    __slots__ = ("app", "attributes", "name", "tracer")

    def __init__(self, tracer: OtelTracer, method: str, route: str, app: ASGIApp) -> None:
        self.tracer = tracer
        self.app = app
        self.name = f"{method} {route}"
        self.attributes = {"http.request.method": method, "http.route": route}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.tracer
        carrier = propagated(scope)
        if not carrier and not tracer.sample_root():
            await self.app(scope, receive, send)
            return
        parent = tracer.propagator.extract(carrier, context=Context())
        span = tracer.tracer.start_span(
            self.name, context=parent, kind=SpanKind.SERVER,
            attributes={**self.attributes, "url.scheme": scope.get("scheme", "http")},
        )
        spans = RequestSpans(span)
        current = otel_context.set_value(tracer.key, spans, set_span_in_context(span, parent))
        token = otel_context.attach(current)

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR)
            raise
        finally:
            otel_context.detach(token)
            if spans.attempt is not None:  # the pipeline's end never came (a bug upstream of us)
                spans.attempt.end()
            span.end()


def propagated(scope: Scope) -> dict[str, str]:
    """The W3C trace context headers the client sent, if any."""
    carrier: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in PROPAGATED:
            carrier[name.decode()] = value.decode("latin-1")
    return carrier
