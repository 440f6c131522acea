"""/metrics after a known mix of requests, multi-worker aggregation, and the access log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from gateway.simulator import SimulatorSettings, create_simulator_app
from gateway.usage import usage_of
from tests.configs import CODE, REASON, three_models
from tests.support import ThreadServer, free_port, gateway, serve, wait_for


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def chat(url: str, text: str, affinity: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"X-Model-Affinity": affinity} if affinity else {}
    body = {"messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)


def test_known_mix_gives_exact_counts(simulator: ThreadServer, redis_url: str) -> None:
    config = three_models(simulator.url, redis_url)
    with serve(create_simulator_app(SimulatorSettings())) as doomed:
        dead = doomed.url
    config["model_providers"].append({"model": "vllm/dead", "base_url": dead})
    with gateway(config) as server:
        assert chat(server.url, REASON).status_code == 200                      # unpinned
        assert chat(server.url, REASON).status_code == 200                      # unpinned
        for _ in range(3):                                                       # new, hit, hit
            assert chat(server.url, CODE, affinity="s1").status_code == 200
        streamed = chat(server.url, REASON, affinity="s2", stream=True,         # new, streamed
                        stream_options={"include_usage": True})
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        assert chat(server.url, "hi", model="dead").status_code == 503          # failing upstream
        routed = httpx.post(f"{server.url}/routing/v1/chat/completions",       # a decision only
                            json={"messages": [{"role": "user", "content": CODE}]})
        assert routed.status_code == 200
        samples = scrape(server.url)
    total = "gateway_requests_total"
    assert value(samples, total, endpoint="chat_completions", model="openai/gpt-4o", status="200") == 3
    assert value(samples, total, endpoint="chat_completions", model="vllm/coder", status="200") == 3
    # a failed request counts under the model it was for, as its x-gateway-model header says
    assert value(samples, total, endpoint="chat_completions", model="vllm/dead", status="503") == 1
    assert value(samples, total, endpoint="routing_chat_completions", model="vllm/coder", status="200") == 1
    assert value(samples, "gateway_request_duration_seconds_count", endpoint="chat_completions") == 7
    events = "gateway_affinity_events_total"
    assert (value(samples, events, event="new"), value(samples, events, event="hit")) == (2, 2)
    decisions = "gateway_routing_decisions_total"
    assert value(samples, decisions, route="code_generation", model="vllm/coder", source="router") == 2
    assert value(samples, decisions, route="code_generation", model="vllm/coder", source="affinity") == 2
    assert value(samples, decisions, route="complex_reasoning", model="openai/gpt-4o", source="router") == 3
    assert value(samples, decisions, route="", model="vllm/dead", source="router") == 1
    assert value(samples, "gateway_router_duration_seconds_count", router="builtin") == 6
    assert value(samples, "gateway_time_to_first_token_seconds_count", model="openai/gpt-4o") == 1
    assert value(samples, "gateway_upstream_errors_total", provider="vllm", reason="connect") == 1
    assert value(samples, "gateway_tokens_total", model="vllm/coder", kind="completion") > 0
    streamed_usage = json.loads(streamed.text.split("data: ")[-2])["usage"]
    assert value(samples, "gateway_tokens_total", model="openai/gpt-4o", kind="completion") >= \
        streamed_usage["completion_tokens"]
    assert value(samples, "gateway_inflight_requests") == 0
    assert value(samples, "gateway_affinity_store_duration_seconds_count", store="redis") == 6


def test_model_names_a_wildcard_passes_through_cannot_grow_the_metrics_without_bound(
    simulator: ThreadServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients choose the names a wildcard serves: past MODEL_LABELS of them, a name is counted
    as its wildcard's; configured names always keep their own label."""
    monkeypatch.setattr("gateway.metrics.MODEL_LABELS", 2)
    config = three_models(simulator.url)
    config["model_providers"].append({"model": "anthropic/*", "base_url": simulator.url, "access_key": "k"})
    with gateway(config) as server:
        for n in range(5):
            answer = httpx.post(f"{server.url}/v1/messages", json={
                "model": f"claude-made-up-{n}", "max_tokens": 8,
                "messages": [{"role": "user", "content": "hi"}]})
            assert answer.headers["x-gateway-model"] == f"anthropic/claude-made-up-{n}"  # served as asked
        assert chat(server.url, "hi", model="fast").status_code == 200
        samples = scrape(server.url)
    labels = {dict(labels).get("model") for (name, labels) in samples if name == "gateway_requests_total"}
    assert labels == {"anthropic/claude-made-up-0", "anthropic/claude-made-up-1", "anthropic/*",
                      "openai/gpt-4o-mini"}
    past_the_cap = value(samples, "gateway_requests_total", endpoint="messages", model="anthropic/*",
                         status="200")
    assert past_the_cap == 3
    tokens = {dict(labels)["model"] for (name, labels) in samples if name == "gateway_tokens_total"}
    assert tokens == labels


def test_metrics_enabled_false_takes_the_endpoint_away(simulator: ThreadServer) -> None:
    config = three_models(simulator.url)
    config["metrics"] = {"enabled": False}  # parsed, and ignored, before
    with gateway(config) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 404
        assert chat(server.url, "hi", model="fast").status_code == 200  # serving goes on


def test_the_private_parts_of_prometheus_client_that_tallies_use_are_there() -> None:
    child = Metrics().request_duration.labels("chat_completions")
    bounds = child._upper_bounds
    assert bounds[-1] == float("inf") and len(child._buckets) == len(bounds)
    child._buckets[0].inc(2)
    child._sum.inc(0.5)
    assert child._buckets[0].get() == 2 and child._sum.get() == 0.5


def test_tallies_flush_into_the_same_exposition_as_direct_updates() -> None:
    direct, tallied = Metrics(), Metrics()
    seconds = [0.0, 0.004, 0.01, 0.0100001, 0.3, 7.0, 159.9, 160.0, 1e6]
    for amount in seconds:
        direct.request_duration.labels("chat_completions").observe(amount)
        direct.requests.labels("chat_completions", "m", "200").inc()
        tallied.request("chat_completions", "m", 200, amount)
    tallied.started()
    tallied.started()
    tallied.finished()
    direct.inflight.inc()
    tallied.flush()
    tallied.request("chat_completions", "m", 200, 0.02)  # after the flush: in the next one
    assert without_created(tallied.registry) == without_created(direct.registry)
    direct.request_duration.labels("chat_completions").observe(0.02)
    direct.requests.labels("chat_completions", "m", "200").inc()
    tallied.render()  # a scrape flushes first
    assert without_created(tallied.registry) == without_created(direct.registry)


def test_an_exemplar_lands_in_its_bucket_as_observe_puts_it() -> None:
    direct, tallied = Metrics(), Metrics()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    for amount in (0.02, 0.3):
        direct.request_duration.labels("chat_completions").observe(amount)
        tallied.request("chat_completions", "m", 200, amount)
    direct.request_duration.labels("chat_completions").observe(0.3, exemplar={"trace_id": trace})
    tallied.request("chat_completions", "m", 200, 0.3)
    tallied.exemplar(tallied.request_duration, ("chat_completions",), trace, 0.3)
    tallied.flush()
    child = tallied.request_duration.labels("chat_completions")
    expected = direct.request_duration.labels("chat_completions")
    found = [(i, b.get_exemplar().labels) for i, b in enumerate(child._buckets) if b.get_exemplar()]
    assert found == [(i, b.get_exemplar().labels) for i, b in enumerate(expected._buckets)
                     if b.get_exemplar()] == [(5, {"trace_id": trace})]  # le="0.5"
    assert f'# {{trace_id="{trace}"}} 0.3' in tallied.render_openmetrics().decode()
    assert "trace_id" not in tallied.render().decode()  # the text format has no exemplars


def test_token_counts_that_are_not_counts_are_not_counted() -> None:
    assert usage_of(b'{"usage": {"prompt_tokens": -5, "completion_tokens": "7"}}') == {
        "prompt_tokens": 0, "completion_tokens": 0, "cached_prompt_tokens": 0}
    metrics = Metrics()
    metrics.usage("m", -5, 3)  # a negative increment would make every later flush fail
    metrics.request("chat_completions", "m", 200, 0.1)
    samples = {(s.name, s.labels.get("kind")): s.value
               for family in text_string_to_metric_families(metrics.render().decode())
               for s in family.samples}
    assert samples[("gateway_tokens_total", "completion")] == 3
    assert ("gateway_tokens_total", "prompt") not in samples
    assert samples[("gateway_requests_total", None)] == 1


def without_created(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line and line.strip()]


def start_gateway(config: dict[str, Any], tmp: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--host", "127.0.0.1",
         "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz").status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None  # died: fail below with its output
    wait_for(ready, timeout=30)
    assert process.poll() is None, process.communicate()
    return process, url


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=30)


def test_two_workers_are_counted_in_one_scrape(
    simulator: ThreadServer, redis_url: str, tmp_path: Path
) -> None:
    process, url = start_gateway(three_models(simulator.url, redis_url), tmp_path, "--workers", "2")
    try:
        for index in range(40):  # a new connection each: the kernel spreads them over the workers
            assert chat(url, CODE, affinity=f"w{index % 5}").status_code == 200
        def counted() -> float:
            return value(scrape(url), "gateway_requests_total", endpoint="chat_completions",
                         model="vllm/coder", status="200")
        wait_for(lambda: counted() == 40, timeout=10)  # each worker flushes its tallies each second
        totals = set()
        for _ in range(8):  # whichever worker answers the scrape, it reports both workers' counts
            samples = scrape(url)
            totals.add(value(samples, "gateway_requests_total", endpoint="chat_completions",
                             model="vllm/coder", status="200"))
        assert totals == {40}
    finally:
        stop(process)


@pytest.mark.parametrize("workers", ["1", "2"])  # worker processes set up their own logging
def test_one_json_log_line_per_request_and_no_secrets(
    simulator: ThreadServer, redis_url: str, tmp_path: Path, workers: str
) -> None:
    config = three_models(simulator.url, redis_url)
    config["logging"] = {"format": "json", "level": "info"}
    config["auth"] = {"keys": [{"key": "gw-team-key-123456", "tenant": "a"}]}
    process, url = start_gateway(config, tmp_path, "--workers", workers)
    bodies = []
    try:
        auth = {"authorization": "Bearer gw-team-key-123456"}
        for headers in (auth, {}, {"authorization": "Bearer wrong-key-999999"}):
            response = httpx.post(
                f"{url}/v1/chat/completions", headers={**headers, "X-Model-Affinity": "sess-1"},
                json={"messages": [{"role": "user", "content": REASON}]},
            )
            bodies.append(response.text)
        response = httpx.post(f"{url}/v1/chat/completions", headers=auth, content=b"{bad")
        bodies.append(response.text)
    finally:
        _, stderr = stop(process)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["msg"] == "request"]
    assert [r["status"] for r in requests] == [200, 401, 401, 400]
    assert requests[0]["model"] == "openai/gpt-4o" and requests[0]["affinity"] == "new"
    assert requests[0]["session"] and requests[0]["session"] != "sess-1"
    assert requests[0]["completion_tokens"] > 0 and requests[0]["latency_ms"] > 0
    for secret in ("gw-team-key-123456", "wrong-key-999999", "sk-provider-secret-1", "sess-1"):
        assert secret not in stderr
        assert all(secret not in body for body in bodies)
