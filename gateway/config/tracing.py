"""The `tracing:` block: our keys, Plano's (`random_sampling`, `opentracing_grpc_endpoint`), and
the standard OTEL_* variables, resolved once into a `TracingConfig`.

Precedence for the endpoint: `tracing.otlp_endpoint` (or Plano's `opentracing_grpc_endpoint`),
then OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, then OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces over
HTTP). Tracing is on when the block has an endpoint from any of these and a sampling above 0, or
when `enabled: true` says so (the OpenTelemetry default endpoint then); a Plano block with only
`random_sampling` loads with a warning and traces nothing, as Plano itself does without one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any, cast
from urllib.parse import urlsplit

from gateway.config.reader import ConfigError, Node
from gateway.config.render import mask_userinfo
from gateway.config.schema import TracingConfig

PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318/v1/traces", "grpc": "http://localhost:4317"}
HTTP_TRACES_PATH = "/v1/traces"
# Modules the exporters live in: the `[tracing]` install extra brings them.
EXPORTER_MODULES = {
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http",
    "grpc": "opentelemetry.exporter.otlp.proto.grpc",
}
PLANO_TRACING = {
    "trace_arch_internal": "Plano's internal spans; the gateway always traces its own steps",
    "sampling_rate": "use sample_ratio (or random_sampling) instead",
    "span_attributes": "Plano's extra span attributes are not implemented",
    "exporters": "Plano's PostHog exporters are not implemented; use an OpenTelemetry Collector",
}


def parse_tracing(root: Node, warnings: list[str]) -> TracingConfig:
    node = root.child("tracing")
    if node is None:
        return TracingConfig()
    env = root.environ
    explicit = node.raw("enabled") is not None
    enabled = node.boolean("enabled", False)
    ratio = _ratio(node)
    protocol, endpoint = _endpoint(node, env)
    config = TracingConfig(
        protocol=protocol,
        sample_ratio=ratio,
        capture_content=node.boolean("capture_content", False),
        service_name=node.string("service_name") or env.get("OTEL_SERVICE_NAME") or None,
        batch_delay_ms=node.integer("batch_delay_ms", 5000, 1, 600_000),
        max_queue_size=node.integer("max_queue_size", 2048, 1, 1_000_000),
        export_timeout_ms=node.integer("export_timeout_ms", 10_000, 1, 600_000),
    )
    warnings.extend(node.finish(PLANO_TRACING))
    if not explicit:
        enabled = endpoint is not None and ratio > 0
        if endpoint is None and ratio > 0:
            warnings.append(
                "tracing: no OTLP endpoint (tracing.otlp_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT); "
                "tracing is off"
            )
    if not enabled:
        return TracingConfig(enabled=False)
    endpoint = endpoint or DEFAULT_ENDPOINTS[protocol]
    _check_installed(protocol, node.path)
    return replace(config, enabled=True, otlp_endpoint=endpoint)


def _ratio(node: Node) -> float:
    if "sample_ratio" in node and "random_sampling" in node:
        raise ConfigError(node.at("random_sampling"), "set sample_ratio or random_sampling, not both")
    if "random_sampling" in node:  # Plano's: a percentage
        return node.number("random_sampling", 100.0, 0.0, 100.0) / 100.0
    return node.number("sample_ratio", 1.0, 0.0, 1.0)


def _endpoint(node: Node, env: Any) -> tuple[Any, str | None]:
    """The protocol, and the endpoint (None: none configured anywhere)."""
    ours = node.string("otlp_endpoint") or None
    plano = node.string("opentracing_grpc_endpoint") or None
    declared = node.string("protocol", choices=PROTOCOLS)
    if ours and plano:
        raise ConfigError(node.at("opentracing_grpc_endpoint"), "set otlp_endpoint or this, not both")
    if plano:
        if declared == "http/protobuf":
            raise ConfigError(node.at("protocol"), "opentracing_grpc_endpoint is a gRPC endpoint")
        _check_endpoint(plano, "grpc", node.at("opentracing_grpc_endpoint"))
        return "grpc", plano
    protocol = declared or _env_protocol(env)
    if ours:
        _check_endpoint(ours, protocol, node.at("otlp_endpoint"))
        return protocol, _with_traces_path(ours, protocol)
    signal = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if signal:
        _check_endpoint(signal, protocol, f"{node.path} (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)")
        return protocol, signal
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if base:
        _check_endpoint(base, protocol, f"{node.path} (OTEL_EXPORTER_OTLP_ENDPOINT)")
        return protocol, _with_traces_path(base, protocol, force=True)
    return protocol, None


def _env_protocol(env: Any) -> str:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(name)
        if value:
            if value not in PROTOCOLS:
                choices = ", ".join(PROTOCOLS)
                message = f"{name}={value!r} is not supported; use one of {choices}"
                raise ConfigError("tracing.protocol", message)
            return cast(str, value)
    return "http/protobuf"


def _with_traces_path(endpoint: str, protocol: str, force: bool = False) -> str:
    """OTLP/HTTP wants the signal's URL; a bare collector address gets /v1/traces (the standard
    base variable always does, by the specification)."""
    if protocol != "http/protobuf":
        return endpoint
    path = urlsplit(endpoint).path
    if force or path in ("", "/"):
        return endpoint.rstrip("/") + HTTP_TRACES_PATH
    return endpoint


def _check_endpoint(endpoint: str, protocol: str, where: str) -> None:
    parts = urlsplit(endpoint)
    shown = mask_userinfo(endpoint)  # an endpoint may carry credentials: never echo them
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(where, f"expected an http:// or https:// URL, got {shown!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(where, f"bad port in {shown!r}") from None
    if protocol == "grpc" and (parts.path not in ("", "/") or parts.username or parts.query):
        # (credentials go in OTEL_EXPORTER_OTLP_HEADERS: the exporter logs its endpoint)
        raise ConfigError(where, f"a gRPC endpoint is scheme, host and port only, got {shown!r}")


def _check_installed(protocol: str, where: str) -> None:
    for module in ("opentelemetry.sdk.trace", EXPORTER_MODULES[protocol]):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(
                where,
                f"tracing is on but {module} is not installed: pip install 'affinity-gateway[tracing]'",
            )
