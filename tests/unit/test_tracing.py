"""gateway/tracing/__init__.py and the OpenTelemetry side's small pieces: what gets wrapped, the
service name's precedence, the captured prompt."""

from __future__ import annotations

import pytest

from gateway.config import TracingConfig
from gateway.metrics import Metrics
from gateway.routes import Prefixed
from gateway.tracing import build_tracer
from gateway.tracing.asgi import ServerSpan, propagated
from gateway.tracing.otel import MAX_CONTENT_CHARS, OtelTracer, input_messages, resource
from gateway.types import Receive, Scope, Send

ON = TracingConfig(enabled=True, otlp_endpoint="http://127.0.0.1:9/v1/traces")


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """A stand-in endpoint: never called here."""


def test_off_builds_nothing() -> None:
    assert build_tracer(TracingConfig(), Metrics()) is None


def test_probes_metrics_and_documents_stay_unwrapped() -> None:
    tracer = build_tracer(ON, Metrics())
    assert isinstance(tracer, OtelTracer)
    tracer.provider.shutdown()  # its batch thread is not needed here
    exact = {path: {"GET": endpoint} for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/")}
    exact["/v1/chat/completions"] = {"POST": endpoint}
    exact["/v1/models"] = {"GET": endpoint}
    admin_route = Prefixed("/v1/affinity/", "affinity_id", {"GET": endpoint})
    traced, prefixed = tracer.instrument(exact, (admin_route,))
    wrapped = {path for path, methods in traced.items()
               if all(isinstance(app, ServerSpan) for app in methods.values())}
    assert wrapped == {"/v1/chat/completions", "/v1/models"}
    [admin] = prefixed
    span = admin.methods["GET"]
    assert isinstance(span, ServerSpan) and span.name == "GET /v1/affinity/{affinity_id}"  # never the id


def test_only_the_trace_context_headers_are_taken() -> None:
    scope = {"headers": [(b"traceparent", b"00-ab-cd-01"), (b"tracestate", b"k=v"), (b"authorization", b"x")]}
    assert propagated(scope) == {"traceparent": "00-ab-cd-01", "tracestate": "k=v"}
    assert propagated({"headers": []}) == {}


def test_service_name_config_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert resource(ON).attributes["service.name"] == "affinity-gateway"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,deployment.environment=prod")
    attributes = resource(ON).attributes
    assert (attributes["service.name"], attributes["deployment.environment"]) == ("from-attributes", "prod")
    named = TracingConfig(enabled=True, service_name="from-config")
    assert resource(named).attributes["service.name"] == "from-config"
    assert resource(ON).attributes["service.instance.id"] != resource(ON).attributes["service.instance.id"]


def test_captured_prompt_is_the_clients_messages_and_system_text_cut_to_size() -> None:
    payload = {"model": "m", "system": "be brief", "messages": [{"role": "user", "content": "hi"}], "x": 1}
    assert input_messages(payload) == '{"system":"be brief","messages":[{"role":"user","content":"hi"}]}'
    huge = {"messages": [{"role": "user", "content": "a" * (2 * MAX_CONTENT_CHARS)}]}
    assert len(input_messages(huge)) == MAX_CONTENT_CHARS
