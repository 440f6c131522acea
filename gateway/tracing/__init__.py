"""Traces (SPEC section 11): what the rest of the gateway sees of them.

Tracing is optional twice over: off unless the config turns it on, and its OpenTelemetry
packages come with the `[tracing]` install extra. This module imports none of them; only
`build_tracer` does, and only when tracing is on. With tracing off `create_app` holds None
where a `Tracer` would be, wraps nothing, and the request path pays a None check.

With tracing on (gateway/tracing/otel.py and its helpers):
- each routed endpoint is wrapped in a SERVER span (`POST /v1/chat/completions`), continuing
  the client's W3C trace when it sends a `traceparent` (tracing/asgi.py);
- the affinity store and the router are wrapped so each call is a child span
  (tracing/wrappers.py): `affinity get`, `affinity pin`, `routing`;
- the dispatcher asks for a CLIENT span per upstream attempt, which also writes `traceparent`
  into that attempt's headers; retries and fallbacks are spans of their own;
- the pipeline's end (`record`) puts the GenAI attributes on the server span and closes the
  attempt that served; a stream's first token is an event.
Spans are batched to an OTLP collector in a background thread (tracing/export.py); a slow or
absent collector drops spans (counted in gateway_trace_spans_dropped_total), never requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.affinity import AffinityStore
    from gateway.config import ModelProvider, TracingConfig
    from gateway.context import RequestContext
    from gateway.metrics import Metrics
    from gateway.routes import Methods, Prefixed
    from gateway.routing import Router


class Attempt(Protocol):
    """One upstream attempt's span, from the request line to its outcome."""

    def answered(self, status: int) -> None:
        """The provider's status: a 2xx keeps the span open until the response is done."""

    def failed(self, reason: str) -> None:
        """No response (connect error, timeout): the span ends as an error."""


class Tracer(Protocol):
    def instrument(
        self, exact: Mapping[str, Methods], prefixed: tuple[Prefixed, ...]
    ) -> tuple[dict[str, Methods], tuple[Prefixed, ...]]:
        """The route table with each traced endpoint wrapped in its server span."""

    def traced_store(self, store: AffinityStore) -> AffinityStore: ...

    def traced_router(self, router: Router) -> Router: ...

    def attempt(self, provider: ModelProvider, attempt: int, headers: dict[str, str]) -> Attempt | None:
        """A span for one upstream attempt, `traceparent` written into `headers`; None outside
        a sampled request."""

    def first_token(self, model: str, seconds: float) -> None: ...

    def record(self, ctx: RequestContext) -> None:
        """The request's outcome on its spans (called once, where the metrics are written)."""

    async def close(self) -> None:
        """Export what is queued, within the export timeout."""


def build_tracer(config: TracingConfig, metrics: Metrics) -> Tracer | None:
    """None when tracing is off: no OpenTelemetry module is imported then."""
    if not config.enabled:
        return None
    from gateway.tracing.otel import OtelTracer  # the `[tracing]` extra, checked by the config loader

    return OtelTracer(config, metrics)
