"""Gateway keys: tenants scope pins; admin keys manage them; nobody reaches another's pin."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from gateway.simulator import SimulatorSettings, create_simulator_app
from tests.configs import CODE, REASON, three_models
from tests.support import ThreadServer, gateway, serve, wait_for

TEAM_A, TEAM_B, ADMIN = "key-team-a-0123456789", "key-team-b-9876543210", "key-admin-5555555555"


@pytest.fixture
def server(simulator: ThreadServer, redis_url: str) -> Any:
    config = three_models(simulator.url, redis_url)
    config["auth"] = {"keys": [{"key": TEAM_A, "tenant": "team-a"}, {"key": TEAM_B, "tenant": "team-b"}],
                      "admin_keys": [ADMIN]}
    with gateway(config) as replica:
        yield replica


def chat(url: str, key: str | None, text: str, use_x_api_key: bool = False) -> httpx.Response:
    headers = {"X-Model-Affinity": "same-id"}
    if key and use_x_api_key:
        headers["x-api-key"] = key
    elif key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(f"{url}/v1/chat/completions", headers=headers,
                      json={"messages": [{"role": "user", "content": text}]})


def test_keys_are_required_and_tenants_scope_pins(server: ThreadServer) -> None:
    for key in (None, "wrong-key", TEAM_A[:-1]):
        response = chat(server.url, key, CODE)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert chat(server.url, TEAM_A, CODE).headers["x-gateway-model"] == "vllm/coder"
    assert chat(server.url, TEAM_B, REASON, use_x_api_key=True).headers["x-gateway-model"] == "openai/gpt-4o"
    assert chat(server.url, TEAM_A, REASON).headers["x-gateway-model"] == "vllm/coder"
    b_again = chat(server.url, TEAM_B, CODE)
    assert (b_again.headers["x-gateway-model"], b_again.headers["x-model-affinity-status"]) == (
        "openai/gpt-4o", "hit")


def test_pins_are_managed_with_the_admin_key_per_tenant(server: ThreadServer) -> None:
    chat(server.url, TEAM_A, CODE)
    url = f"{server.url}/v1/affinity/same-id"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {TEAM_A}"}).status_code == 403
    admin = {"authorization": f"Bearer {ADMIN}"}
    pin = httpx.get(url, params={"tenant": "team-a"}, headers=admin).json()
    assert (pin["model"], pin["route"], pin["tenant"]) == ("vllm/coder", "code_generation", "team-a")
    assert httpx.get(url, params={"tenant": "team-b"}, headers=admin).status_code == 404
    assert httpx.delete(url, params={"tenant": "team-b"}, headers=admin).status_code == 404
    assert httpx.delete(url, params={"tenant": "team-a"}, headers=admin).status_code == 200
    assert httpx.get(url, params={"tenant": "team-a"}, headers=admin).status_code == 404
    bad = httpx.get(f"{server.url}/v1/affinity/bad%20id", headers=admin).json()["error"]
    assert (bad["code"], bad["param"]) == ("invalid_affinity_id", "affinity_id")  # not the header
    again = chat(server.url, TEAM_A, REASON)  # the dropped pin is routed afresh
    assert (again.headers["x-gateway-model"], again.headers["x-model-affinity-status"]) == (
        "openai/gpt-4o", "new")


def test_limits_headers_and_tenant_concurrency(simulator: ThreadServer) -> None:
    config = three_models(simulator.url)
    config["limits"] = {"max_header_bytes": 2048, "max_concurrent_per_tenant": 1, "max_messages": 3}
    slow = create_simulator_app(SimulatorSettings(tokens_per_s=50, answer_tokens=100))
    with serve(slow) as sim:
        config["model_providers"][0]["base_url"] = sim.url
        with gateway(config) as replica:
            url = f"{replica.url}/v1/chat/completions"
            big = httpx.post(url, headers={"x-padding": "p" * 3000}, json={"messages": []})
            assert big.status_code == 431 and big.json()["error"]["code"] == "headers_too_large"
            many = httpx.post(url, json={"messages": [{"role": "user", "content": "x"}] * 4})
            assert many.status_code == 400 and many.json()["error"]["code"] == "too_many_messages"
            body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]}
            with httpx.stream("POST", url, json=body) as streaming:
                assert streaming.status_code == 200
                refused = httpx.post(url, json=body)
                assert refused.status_code == 429
                assert refused.json()["error"]["code"] == "tenant_concurrency_limit"
            # the slot comes back when the stream ends (the client closed it)
            wait_for(lambda: httpx.post(url, json={**body, "stream": False}).status_code == 200, timeout=10)


def test_protect_puts_models_metrics_and_openapi_behind_a_key(simulator: ThreadServer) -> None:
    config = three_models(simulator.url)
    config["auth"] = {"keys": [{"key": TEAM_A, "tenant": "team-a"}], "admin_keys": [ADMIN],
                      "protect": ["metrics", "models", "openapi"]}
    with gateway(config) as replica:
        for key in ("wrong-key", TEAM_A[:-1]):
            with pytest.raises(openai.AuthenticationError) as refused:
                openai.OpenAI(base_url=f"{replica.url}/v1", api_key=key, max_retries=0).models.list()
            assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
        client = openai.OpenAI(base_url=f"{replica.url}/v1", api_key=TEAM_A, max_retries=0)
        assert "openai/gpt-4o" in {model.id for model in client.models.list()}
        for path in ("/metrics", "/openapi.json", "/v1/models"):
            bare = httpx.get(f"{replica.url}{path}")
            assert bare.status_code == 401, path
            assert bare.json()["error"] == {"message": "missing or invalid API key",
                                            "type": "authentication_error", "param": None,
                                            "code": "invalid_api_key"}
            assert httpx.get(f"{replica.url}{path}", headers={"x-api-key": TEAM_A}).status_code == 200
            # a Prometheus scraper may hold the admin key instead of a tenant's
            admin = httpx.get(f"{replica.url}{path}", headers={"authorization": f"Bearer {ADMIN}"})
            assert admin.status_code == 200, path
        assert "gateway_requests_total" in httpx.get(
            f"{replica.url}/metrics", headers={"x-api-key": TEAM_A}).text
        assert httpx.get(f"{replica.url}/healthz").status_code == 200  # probes never need a key
        assert httpx.get(f"{replica.url}/readyz").status_code == 200


def test_without_protect_those_endpoints_stay_open_with_auth_on(server: ThreadServer) -> None:
    models = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-a-gateway-key").models.list()
    assert "vllm/coder" in {model.id for model in models}
    for path in ("/metrics", "/openapi.json"):
        assert httpx.get(f"{server.url}{path}").status_code == 200


def test_keys_are_compared_as_the_header_bytes_latin1(simulator: ThreadServer) -> None:
    key = "cl\u00e9-d'\u00e9quipe-0123456789"  # Latin-1 characters, as an HTTP header carries them
    config = three_models(simulator.url)
    config["auth"] = {"keys": [{"key": key, "tenant": "t"}], "protect": ["models"]}
    with gateway(config) as replica:
        def models(raw_key: bytes) -> int:
            return httpx.get(f"{replica.url}/v1/models",
                             headers={"authorization": b"Bearer " + raw_key}).status_code

        assert models(key.encode("latin-1")) == 200
        assert models(key.encode("utf-8")) == 401  # other bytes, however they would decode
        chat = httpx.post(f"{replica.url}/v1/chat/completions", headers={"x-api-key": key.encode("latin-1")},
                          json={"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
