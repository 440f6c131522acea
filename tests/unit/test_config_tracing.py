"""The `tracing:` block: our keys, Plano's, the OTEL_* variables, and one error per mistake."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from gateway.config import ConfigError, TracingConfig, parse_config
from gateway.config.render import render_config

PROVIDERS = [{"model": "openai/gpt-4o-mini", "access_key": "sk-x"}]


def tracing(block: Any, env: dict[str, str] | None = None) -> TracingConfig:
    return parse_config({"model_providers": PROVIDERS, "tracing": block}, env or {}).tracing


def test_no_block_means_off_whatever_the_environment() -> None:
    config = parse_config({"model_providers": PROVIDERS}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert config.tracing == TracingConfig()
    assert not config.tracing.enabled


def test_our_keys() -> None:
    config = tracing({
        "otlp_endpoint": "http://collector:4318", "sample_ratio": 0.25, "capture_content": True,
        "service_name": "edge-gw", "batch_delay_ms": 50, "max_queue_size": 100, "export_timeout_ms": 2000,
    })
    assert config == TracingConfig(
        enabled=True, otlp_endpoint="http://collector:4318/v1/traces", protocol="http/protobuf",
        sample_ratio=0.25, capture_content=True, service_name="edge-gw", batch_delay_ms=50,
        max_queue_size=100, export_timeout_ms=2000,
    )


def test_an_endpoint_with_a_path_is_taken_as_the_signals_url() -> None:
    assert tracing({"otlp_endpoint": "https://otel.example/ingest/traces"}).otlp_endpoint == (
        "https://otel.example/ingest/traces")


def test_grpc_endpoint_is_kept_as_is() -> None:
    config = tracing({"otlp_endpoint": "http://collector:4317", "protocol": "grpc"})
    assert (config.protocol, config.otlp_endpoint) == ("grpc", "http://collector:4317")


def test_plano_keys() -> None:
    config = parse_config({"model_providers": PROVIDERS, "tracing": {
        "random_sampling": 10, "opentracing_grpc_endpoint": "http://jaeger:4317",
        "trace_arch_internal": True}}, {})
    assert config.tracing.enabled
    assert (config.tracing.protocol, config.tracing.otlp_endpoint) == ("grpc", "http://jaeger:4317")
    assert config.tracing.sample_ratio == pytest.approx(0.1)
    assert config.warnings == (
        "tracing.trace_arch_internal: Plano's internal spans; the gateway always traces its own steps; "
        "ignored",)


def test_plano_sampling_of_zero_is_off_as_in_plano() -> None:
    assert not tracing({"random_sampling": 0, "opentracing_grpc_endpoint": "http://jaeger:4317"}).enabled


def test_standard_variables_give_endpoint_protocol_and_service_name() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/", "OTEL_SERVICE_NAME": "from-env"}
    config = tracing({"sample_ratio": 1}, env)
    assert config.enabled
    assert config.otlp_endpoint == "http://collector:4318/v1/traces"
    assert config.service_name == "from-env"
    signal = {**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://other:4318/custom",
              "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    config = tracing({}, {**signal, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://other:4317"})
    assert (config.protocol, config.otlp_endpoint) == ("grpc", "http://other:4317")


def test_config_wins_over_the_variables() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:4318/v1/traces", "OTEL_SERVICE_NAME": "env",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    config = tracing({"otlp_endpoint": "http://ours:4318", "protocol": "http/protobuf",
                      "service_name": "ours"}, env)
    assert (config.otlp_endpoint, config.protocol, config.service_name) == (
        "http://ours:4318/v1/traces", "http/protobuf", "ours")


def test_enabled_without_an_endpoint_uses_the_opentelemetry_default() -> None:
    assert tracing({"enabled": True}).otlp_endpoint == "http://localhost:4318/v1/traces"
    assert tracing({"enabled": True, "protocol": "grpc"}).otlp_endpoint == "http://localhost:4317"
    assert not tracing({"enabled": False, "otlp_endpoint": "http://collector:4318"}).enabled


@pytest.mark.parametrize(
    ("block", "env", "message"),
    [
        ({"sample_ratio": 2}, {}, "tracing.sample_ratio: must be between 0.0 and 1.0, got 2"),
        ({"random_sampling": 150}, {}, "tracing.random_sampling: must be between 0.0 and 100.0, got 150"),
        ({"random_sampling": 5, "sample_ratio": 0.5}, {},
         "tracing.random_sampling: set sample_ratio or random_sampling, not both"),
        ({"otlp_endpoint": "collector:4318"}, {},
         "tracing.otlp_endpoint: expected an http:// or https:// URL, got 'collector:4318'"),
        ({"otlp_endpoint": "http://c:4317/v1", "protocol": "grpc"}, {},
         "tracing.otlp_endpoint: a gRPC endpoint is scheme, host and port only, got 'http://c:4317/v1'"),
        ({"otlp_endpoint": "http://c:x"}, {}, "tracing.otlp_endpoint: bad port in 'http://c:x'"),
        ({"otlp_endpoint": "http://user:s3cret@c:x"}, {},  # credentials never echoed
         "tracing.otlp_endpoint: bad port in 'http://***@c:x'"),
        ({"otlp_endpoint": "http://u:sk-SECRET@c:4317", "protocol": "grpc"}, {},  # the exporter logs it
         "tracing.otlp_endpoint: a gRPC endpoint is scheme, host and port only, got 'http://***@c:4317'"),
        ({"protocol": "http/json"}, {},
         "tracing.protocol: expected one of http/protobuf, grpc, got 'http/json'"),
        ({"otlp_endpoint": "http://a:1", "opentracing_grpc_endpoint": "http://b:2"}, {},
         "tracing.opentracing_grpc_endpoint: set otlp_endpoint or this, not both"),
        ({"opentracing_grpc_endpoint": "http://b:2", "protocol": "http/protobuf"}, {},
         "tracing.protocol: opentracing_grpc_endpoint is a gRPC endpoint"),
        ({"enabled": True}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
         "tracing.protocol: OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported; "
         "use one of http/protobuf, grpc"),
        ({"sample_ratio": 1}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://c"},
         "tracing (OTEL_EXPORTER_OTLP_ENDPOINT): expected an http:// or https:// URL, got 'ftp://c'"),
        ({"exporter": "otlp"}, {}, "tracing.exporter: unknown key (did you mean 'exporters'?)"),
        ({"batch_delay_ms": 0}, {}, "tracing.batch_delay_ms: must be between 1 and 600000, got 0"),
        ("on", {}, "tracing: expected a mapping, got a string"),
    ],
)
def test_mistakes_are_one_error_naming_the_key(block: Any, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        tracing(block, env)
    assert str(caught.value) == message


def test_tracing_on_without_the_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A module set to None in sys.modules is one that cannot be found (importlib's own rule).
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc", None)
    assert tracing({"otlp_endpoint": "http://c:4318"}).enabled  # HTTP is still there
    with pytest.raises(ConfigError) as caught:
        tracing({"otlp_endpoint": "http://c:4317", "protocol": "grpc"})
    assert str(caught.value) == (
        "tracing: tracing is on but opentelemetry.exporter.otlp.proto.grpc is not installed: "
        "pip install 'affinity-gateway[tracing]'")
    # Off, nothing is needed: a config with tracing off loads without the extra.
    assert not tracing({"enabled": False, "protocol": "grpc"}).enabled


def test_check_config_masks_an_endpoints_token_whether_user_or_query() -> None:
    for endpoint, secret in (("https://TOKEN-1@otel:4318", "TOKEN-1"),
                             ("https://otel:4318/v1/traces?api_key=TOKEN-2&x=1", "TOKEN-2")):
        config = parse_config({"model_providers": [{"model": "openai/a"}],
                               "tracing": {"otlp_endpoint": endpoint}}, environ={})
        shown = render_config(config)
        assert secret not in shown and "otel:4318" in shown
