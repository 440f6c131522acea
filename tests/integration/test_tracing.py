"""Traces end to end: gateway replicas export OTLP to a real receiver started by the test."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import httpx
import openai

from gateway.affinity import pin_key
from gateway.app import create_app
from gateway.auth import DEFAULT_TENANT
from gateway.config import parse_config
from tests.configs import CODE, three_models
from tests.otlp import ReceivedSpan, Receiver, otlp_grpc_receiver, otlp_receiver
from tests.support import ThreadServer, free_port, gateway, wait_for

TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPANS = ("b7ad6b7169203331", "c7ad6b7169203332")
SESSION = "trace-session-1"
SERVER = "POST /v1/chat/completions"


def traced(upstream: str, collector: str, redis_url: str | None = None, **tracing: Any) -> dict[str, Any]:
    config = three_models(upstream, redis_url)
    config["tracing"] = {"otlp_endpoint": collector, "batch_delay_ms": 20, **tracing}
    return config


def client(replica: ThreadServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0)


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> dict[str, list[ReceivedSpan]]:
    found: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        if span.parent_span_id == parent.span_id:
            found.setdefault(span.name, []).append(span)
    return found


def complete_trace(receiver: Receiver, trace_id: str, count: int) -> list[ReceivedSpan]:
    return wait_for(lambda: len(spans := receiver.of_trace(trace_id)) >= count and spans,
                    message=f"fewer than {count} spans of trace {trace_id} arrived")


def test_two_turns_through_two_replicas_make_one_trace_with_genai_and_affinity_attributes(
    simulator: ThreadServer, redis_url: str
) -> None:
    httpx.delete(f"{simulator.url}/_simulator/requests")
    with otlp_receiver() as (receiver, collector):
        config = traced(simulator.url, collector.url, redis_url, service_name="gw-under-test")
        with gateway(config) as first, gateway(config) as second:
            messages: Any = [{"role": "user", "content": CODE}]
            whole = client(first).chat.completions.create(
                model="gpt-4o-mini", messages=messages,
                extra_headers={"X-Model-Affinity": SESSION,
                               "traceparent": f"00-{TRACE}-{CLIENT_SPANS[0]}-01"})
            messages += [{"role": "assistant", "content": whole.choices[0].message.content},
                         {"role": "user", "content": "and now a test for it"}]
            stream = client(second).chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True,
                stream_options={"include_usage": True},
                extra_headers={"X-Model-Affinity": SESSION,
                               "traceparent": f"00-{TRACE}-{CLIENT_SPANS[1]}-01",
                               "tracestate": "vendor=opaque"})
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            # Exemplars: the request histogram links its bucket to this trace.
            scrape = httpx.get(f"{first.url}/metrics",
                               headers={"accept": "application/openmetrics-text; version=1.0.0"})
            assert scrape.headers["content-type"].startswith("application/openmetrics-text")
            assert f'# {{trace_id="{TRACE}"}}' in scrape.text
            plain = httpx.get(f"{first.url}/metrics")  # a plain scrape keeps the text format
            assert "# {" not in plain.text
            # server, routing, get, pin, client; then server, get, client
            spans = complete_trace(receiver, TRACE, 8)

    servers = sorted((s for s in spans if s.name == SERVER), key=lambda s: s.parent_span_id)
    assert [s.parent_span_id for s in servers] == list(CLIENT_SPANS)  # the client's trace goes on
    assert all(s.kind == "server" for s in servers)
    assert servers[0].resource["service.name"] == "gw-under-test"
    assert servers[0].resource["service.instance.id"] != servers[1].resource["service.instance.id"]
    conversation = pin_key(DEFAULT_TENANT, SESSION, "model:gpt-4o-mini")  # the session's lane
    for server, status, source in zip(servers, ("new", "hit"), ("router", "affinity"), strict=True):
        attributes = server.attributes
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert attributes["gen_ai.provider.name"] == "vllm"
        assert attributes["gen_ai.response.model"] == "coder"
        assert attributes["gen_ai.conversation.id"] == conversation
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["affinity.status"] == status
        assert attributes["affinity.source"] == "header"  # X-Model-Affinity
        assert attributes["gateway.decision.source"] == source
        assert attributes["gateway.route"] == "code_generation"
        assert attributes["http.route"] == "/v1/chat/completions"
        assert attributes["http.response.status_code"] == 200

    first_turn, second_turn = children(spans, servers[0]), children(spans, servers[1])
    assert sorted(first_turn) == ["affinity get", "affinity pin", "chat coder", "routing"]
    assert sorted(second_turn) == ["affinity get", "chat coder"]  # pinned: no routing at all
    routing = first_turn["routing"][0].attributes
    assert routing == {"gateway.router": "builtin", "gateway.route": "code_generation",
                       "gateway.route.source": "router"}
    assert first_turn["affinity get"][0].attributes["affinity.status"] == "miss"
    assert first_turn["affinity pin"][0].attributes["affinity.status"] == "new"
    assert second_turn["affinity get"][0].attributes["affinity.status"] == "hit"
    assert second_turn["affinity get"][0].attributes["affinity.store"] == "redis"
    attempts = [first_turn["chat coder"][0], second_turn["chat coder"][0]]
    for attempt in attempts:
        assert attempt.kind == "client"
        assert attempt.attributes["server.address"] == "127.0.0.1"
        assert attempt.attributes["server.port"] == simulator.port
        assert attempt.attributes["gen_ai.request.model"] == "coder"
        assert attempt.attributes["http.response.status_code"] == 200
        assert attempt.attributes["gen_ai.usage.output_tokens"] > 0
    assert [name for name, _ in servers[1].events] == ["first_token"]
    assert [name for name, _ in attempts[1].events] == ["first_token"]
    assert servers[0].events == []  # a whole answer has no first token

    # The provider saw each attempt's span as its parent, in the client's trace.
    sent = [r["headers"] for r in httpx.get(f"{simulator.url}/_simulator/requests").json()]
    parents = [h["traceparent"] for h in sent if TRACE in h.get("traceparent", "")]
    assert parents == [f"00-{TRACE}-{attempt.span_id}-01" for attempt in attempts]
    assert [h.get("tracestate") for h in sent if TRACE in h.get("traceparent", "")] == [
        None, "vendor=opaque"]

    # No content and no raw session id anywhere unless capture_content says so.
    for span in spans:
        for value in span.attributes.values():
            assert SESSION not in str(value) and "CSV" not in str(value)


def test_retries_and_fallbacks_are_spans_of_their_own(simulator: ThreadServer) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: a connect error each time
    with otlp_receiver() as (receiver, collector):
        config = traced(simulator.url, collector.url, capture_content=True)
        config["model_providers"][2]["base_url"] = closed  # vllm/coder, the route's first choice
        config["upstream"] = {"max_retries": 1, "retry_backoff_ms": 1}
        with gateway(config) as replica:
            answer = client(replica).chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": CODE}],
                extra_headers={"X-Model-Affinity": "fallback-session"})
            assert answer.headers["x-gateway-model"] == "openai/gpt-4o"
            server = wait_for(lambda: receiver.named(SERVER), message="no server span")[0]
            spans = complete_trace(receiver, server.trace_id, 7)

    assert server.parent_span_id == ""  # no traceparent came: the gateway started the trace
    below = children(spans, server)
    failed = sorted(below["chat coder"], key=lambda s: s.attributes["gateway.attempt"])
    assert [s.attributes["gateway.attempt"] for s in failed] == [0, 1]  # the retry
    assert all(s.error and s.attributes["error.type"] == "connect" for s in failed)
    served = below["chat gpt-4o"][0]  # the fallback
    assert not served.error and served.attributes["http.response.status_code"] == 200
    assert below["affinity repin"][0].attributes["affinity.status"] == "new"  # the pin followed
    assert server.attributes["gateway.rerouted_from"] == "vllm/coder"
    assert server.attributes["gateway.model"] == "openai/gpt-4o"
    assert CODE in server.attributes["gen_ai.input.messages"]  # capture_content: true


def test_plano_tracing_block_exports_over_grpc(simulator: ThreadServer) -> None:
    with otlp_grpc_receiver() as (receiver, endpoint):
        config = three_models(simulator.url)
        config["tracing"] = {"random_sampling": 100, "opentracing_grpc_endpoint": endpoint,
                             "trace_arch_internal": True, "batch_delay_ms": 20}
        with gateway(config) as replica:
            httpx.post(f"{replica.url}/routing/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": CODE}]}).raise_for_status()
            server = wait_for(lambda: receiver.named("POST /routing/v1/chat/completions"),
                              message="no span came over gRPC")[0]
            spans = complete_trace(receiver, server.trace_id, 2)
    assert server.attributes["gateway.route"] == "code_generation"
    assert server.resource["service.name"] == "affinity-gateway"
    assert sorted(children(spans, server)) == ["routing"]  # a decision only: no upstream call


def test_sampling_keeps_a_clients_sampled_trace_and_the_ratio_decides_the_rest(
    simulator: ThreadServer,
) -> None:
    with otlp_receiver() as (receiver, collector):
        config = traced(simulator.url, collector.url, enabled=True, sample_ratio=0)
        with gateway(config) as replica:
            api = client(replica)
            api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
            api.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}],
                extra_headers={"traceparent": f"00-{TRACE}-{CLIENT_SPANS[0]}-01"})
            complete_trace(receiver, TRACE, 3)  # server, routing, client
        assert {span.trace_id for span in receiver.spans} == {TRACE}


def test_an_unreachable_collector_fails_no_request_and_its_lost_spans_are_counted(
    simulator: ThreadServer,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    config = traced(simulator.url, nowhere, export_timeout_ms=300, max_queue_size=2)
    with gateway(config) as replica:
        api = client(replica)
        served = 0

        def dropped() -> dict[str, float]:
            text = httpx.get(f"{replica.url}/metrics").text
            return {reason: float(line.rsplit(" ", 1)[1]) for reason in ("queue_full", "export_failed")
                    for line in text.splitlines()
                    if line.startswith(f'gateway_trace_spans_dropped_total{{reason="{reason}"}}')}

        def both_reasons_after_another_request() -> dict[str, float] | None:
            # How many spans the full queue refuses and how many fail to export depends on
            # the export thread's pace (a loaded machine's): requests go on until both show.
            nonlocal served
            api.chat.completions.create(model="fast", messages=[{"role": "user", "content": str(served)}])
            served += 1
            found = dropped()
            return found if len(found) == 2 and all(found.values()) else None

        counts = wait_for(both_reasons_after_another_request, timeout=30,
                          message="dropped spans were not counted")
        # each request's spans (three) counted once at most
        assert counts["queue_full"] + counts["export_failed"] <= served * 3


def test_a_replica_stops_in_time_while_its_collector_is_down(simulator: ThreadServer) -> None:
    # An export timeout far beyond any grace period: the exporter retries all of it.
    config = traced(simulator.url, f"http://127.0.0.1:{free_port()}", export_timeout_ms=120_000)
    replica = ThreadServer(create_app(parse_config(config, environ={}))).start()
    try:
        client(replica).chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    finally:
        replica.stop()  # joins the server thread for up to 15 s
    assert not replica.thread.is_alive(), "the last export held the replica's exit"
    # ...and its retries were called off: nothing of the replica goes on in the background.
    wait_for(lambda: not any(t.name == "trace-shutdown" for t in threading.enumerate()),
             message="the exporter kept retrying after the replica stopped")


def test_tracing_off_imports_no_trace_sdk_nor_exporter() -> None:
    # Only the trace SDK and the exporters: redis-py (8.x) imports OpenTelemetry's metrics SDK
    # by itself whenever it is installed, whatever the gateway's config.
    program = (
        "import sys\n"
        "from gateway.app import create_app\n"
        "from gateway.config import parse_config\n"
        "from tests.configs import three_models\n"
        "create_app(parse_config(three_models('http://127.0.0.1:9'), environ={}))\n"
        "kinds = ('gateway.tracing.', 'opentelemetry.sdk.trace', 'opentelemetry.exporter')\n"
        "print(sorted(m for m in sys.modules if m.startswith(kinds)))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
