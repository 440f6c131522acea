"""Pinned failures: `routing.on_pinned_failure` error (default) or reroute (re-pin once)."""

from __future__ import annotations

import httpx
import pytest

from gateway.simulator import SimulatorSettings, create_simulator_app
from tests.configs import CODE, REASON, three_models
from tests.support import RedisServer, ThreadServer, gateway, serve


def dead_url() -> str:
    with serve(create_simulator_app(SimulatorSettings())) as doomed:
        return doomed.url


def chat(url: str, text: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"X-Model-Affinity": "sess"},
                      json={"messages": [{"role": "user", "content": text}]})


@pytest.mark.parametrize("mode", ["error", "reroute"])
def test_a_first_turn_whose_model_fails_is_served_by_the_next_and_the_pin_follows(
    simulator: ThreadServer, redis_url: str, mode: str
) -> None:
    config = three_models(simulator.url, redis_url, on_pinned_failure=mode)
    config["model_providers"][2]["base_url"] = dead_url()  # vllm/coder, code_generation's first model
    with gateway(config) as first, gateway(config) as second:
        response = chat(first.url, CODE)  # nothing of the session lives on any model yet
        assert response.status_code == 200
        assert (response.headers["x-gateway-model"], response.headers["x-model-affinity-status"]) == (
            "openai/gpt-4o", "new")
        assert response.headers["x-gateway-rerouted-from"] == "vllm/coder"
        again = chat(second.url, REASON)  # the other replica sees the pin where the turn went
        assert (again.headers["x-gateway-model"], again.headers["x-model-affinity-status"]) == (
            "openai/gpt-4o", "hit")
        assert "x-gateway-rerouted-from" not in again.headers


@pytest.mark.parametrize("mode", ["error", "reroute"])
def test_pinned_model_failing_later(simulator: ThreadServer, redis_url: str, mode: str) -> None:
    coder = ThreadServer(create_simulator_app(SimulatorSettings())).start()
    config = three_models(simulator.url, redis_url, on_pinned_failure=mode)
    config["model_providers"][2]["base_url"] = coder.url  # vllm/coder, code_generation's first model
    try:
        with gateway(config) as first, gateway(config) as second:
            assert chat(first.url, CODE).headers["x-gateway-model"] == "vllm/coder"
            coder.stop()  # the session's model goes away after its first turn
            response = chat(first.url, REASON)
            if mode == "error":
                assert response.status_code == 503
                assert chat(second.url, REASON).status_code == 503  # still pinned to the dead model
                return
            assert response.status_code == 200
            assert response.headers["x-gateway-rerouted-from"] == "vllm/coder"
            assert response.headers["x-gateway-model"] == "openai/gpt-4o"
            again = chat(second.url, REASON)  # the other replica sees the moved pin
            assert (again.headers["x-gateway-model"], again.headers["x-model-affinity-status"]) == (
                "openai/gpt-4o", "hit")
            assert "x-gateway-rerouted-from" not in again.headers
    finally:
        coder.stop()


def test_a_request_the_upstream_rejects_does_not_move_the_pin(
    simulator: ThreadServer, redis_url: str
) -> None:
    config = three_models(simulator.url, redis_url, on_pinned_failure="reroute")
    with gateway(config) as replica:
        assert chat(replica.url, CODE).headers["x-gateway-model"] == "vllm/coder"
        rejected = httpx.post(  # the client's fault: every model would refuse it
            f"{replica.url}/v1/chat/completions", headers={"X-Model-Affinity": "sess"},
            json={"messages": [{"role": "assistant", "content": "x", "tool_calls": True},
                               {"role": "user", "content": CODE}]})
        assert rejected.status_code == 400
        assert "x-gateway-rerouted-from" not in rejected.headers
        after = chat(replica.url, REASON)
        assert (after.headers["x-gateway-model"], after.headers["x-model-affinity-status"]) == (
            "vllm/coder", "hit")


def test_a_rerouted_sub_agent_lane_stays_listed_for_every_replica(
    simulator: ThreadServer, redis_url: str, redis_server: RedisServer
) -> None:
    """The reroute moves the lane's pin with a fresh TTL, and its session's lane listing with it:
    a replica that never saw the lane still finds it (else: 404 on GET and DELETE)."""
    coder = ThreadServer(create_simulator_app(SimulatorSettings())).start()
    config = three_models(simulator.url, redis_url, on_pinned_failure="reroute")
    config["model_providers"][2]["base_url"] = coder.url
    lane = {"x-claude-code-agent-id": "sub"}
    try:
        with gateway(config) as first, gateway(config) as other:
            turn = httpx.post(f"{first.url}/v1/chat/completions", headers={"X-Model-Affinity": "lt", **lane},
                              json={"messages": [{"role": "user", "content": CODE}]})
            assert turn.headers["x-gateway-model"] == "vllm/coder"
            [listing] = redis_server.command("KEYS", "*:s:*")
            redis_server.command("PEXPIRE", listing, "5000")  # as if the lane was pinned long ago
            coder.stop()
            moved = httpx.post(f"{first.url}/v1/chat/completions", headers={"X-Model-Affinity": "lt", **lane},
                               json={"messages": [{"role": "user", "content": REASON}]})
            assert moved.headers["x-gateway-rerouted-from"] == "vllm/coder"
            assert int(redis_server.command("PTTL", listing)) > 500_000
            listed = httpx.get(f"{other.url}/v1/affinity/lt").json()["lanes"]
            assert [(entry["lane"], entry["model"]) for entry in listed] == [("agent:sub", "openai/gpt-4o")]
    finally:
        coder.stop()
