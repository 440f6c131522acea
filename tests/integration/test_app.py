"""The gateway end to end: real replicas, a real Redis, the simulator upstream, the OpenAI SDK."""

from __future__ import annotations

import concurrent.futures
import random
from typing import Any

import httpx
import openai
import pytest

from tests.configs import CODE, REASON, three_models
from tests.support import ThreadServer, gateway


def client(server: ThreadServer, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="client-key-never-forwarded",
        default_headers=headers, max_retries=0,
    )


def turn(server: ThreadServer, text: str, affinity: str | None = None) -> tuple[str, dict[str, str]]:
    headers = {"X-Model-Affinity": affinity} if affinity else {}
    with client(server) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}], extra_headers=headers
        )
        raw.parse()
    return raw.headers["x-gateway-model"], dict(raw.headers)


@pytest.fixture
def replicas(simulator: ThreadServer, redis_url: str) -> Any:
    config = three_models(simulator.url, redis_url)
    with gateway(config) as a, gateway(config) as b, gateway(config) as c:
        yield [a, b, c]


def test_sessions_keep_one_model_across_replicas_and_switch_without_header(replicas: Any) -> None:
    rng = random.Random(7)
    for session in range(32):
        pinned: set[str] = set()
        unpinned: set[str] = set()
        for index in range(6):
            text = CODE if (index + session) % 2 == 0 else REASON
            model, headers = turn(rng.choice(replicas), text, affinity=f"session-{session}")
            pinned.add(model)
            assert headers["x-model-affinity-status"] == ("new" if index == 0 else "hit")
            unpinned.add(turn(rng.choice(replicas), text)[0])
        assert len(pinned) == 1
        assert unpinned == {"vllm/coder", "openai/gpt-4o"}


def test_routes_by_preference_and_reports_route(replicas: Any) -> None:
    model, headers = turn(replicas[0], CODE)
    assert (model, headers["x-gateway-route"]) == ("vllm/coder", "code_generation")
    assert headers["x-model-affinity-status"] == "none"
    model, headers = turn(replicas[0], "hello there")
    assert (model, headers["x-gateway-route"]) == ("openai/gpt-4o-mini", "")


def test_concurrent_first_turns_on_all_replicas_agree(replicas: Any) -> None:
    def first_turn(args: tuple[int, int]) -> tuple[int, str]:
        session, replica = args
        text = CODE if replica % 2 else REASON
        return session, turn(replicas[replica % 3], text, affinity=f"race-{session}")[0]

    jobs = [(session, replica) for session in range(20) for replica in range(6)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(first_turn, jobs))
    by_session: dict[int, set[str]] = {}
    for session, model in results:
        by_session.setdefault(session, set()).add(model)
    assert all(len(models) == 1 for models in by_session.values()), by_session


@pytest.mark.parametrize("bad_id", ["x" * 129, "has space", "", "caf\u00e9", "semi;colon"])
def test_bad_affinity_ids_are_400(replicas: Any, bad_id: str) -> None:
    response = httpx.post(
        f"{replicas[0].url}/v1/chat/completions",
        headers={"X-Model-Affinity": bad_id.encode("utf-8")},
        json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_affinity_id"


def test_two_tenants_with_one_id_get_separate_pins(simulator: ThreadServer, redis_url: str) -> None:
    config = three_models(simulator.url, redis_url)
    config["routing"]["session_cache"]["tenant_header"] = "x-tenant-id"
    with gateway(config) as server:
        def send(tenant: str, text: str) -> str:
            response = httpx.post(
                f"{server.url}/v1/chat/completions",
                headers={"X-Model-Affinity": "shared-id", "x-tenant-id": tenant},
                json={"messages": [{"role": "user", "content": text}]},
            )
            assert response.status_code == 200
            return response.headers["x-gateway-model"]

        assert send("team-a", CODE) == "vllm/coder"
        assert send("team-b", REASON) == "openai/gpt-4o"
        assert send("team-a", REASON) == "vllm/coder"
        assert send("team-b", CODE) == "openai/gpt-4o"


def test_provider_key_injected_and_client_key_never_forwarded(
    replicas: Any, simulator: ThreadServer
) -> None:
    httpx.delete(f"{simulator.url}/_simulator/requests")
    turn(replicas[0], REASON)
    turn(replicas[0], CODE)
    seen = httpx.get(f"{simulator.url}/_simulator/requests").json()
    auth = [request["headers"].get("authorization") for request in seen]
    assert auth == ["Bearer sk-provider-secret-1", None]  # gpt-4o has a key; vllm/coder has none
    assert all("client-key-never-forwarded" not in str(request) for request in seen)
    assert [request["body"]["model"] for request in seen] == ["gpt-4o", "coder"]


def test_models_aliases_and_health(replicas: Any) -> None:
    with client(replicas[0]) as sdk:
        listed = sdk.models.list()
    ids = [model.id for model in listed.data]
    assert ids == ["openai/gpt-4o-mini", "openai/gpt-4o", "vllm/coder", "fast"]
    assert httpx.get(f"{replicas[0].url}/healthz").status_code == 200
    assert httpx.get(f"{replicas[0].url}/readyz").status_code == 200
    model, _ = turn(replicas[0], "hello", None)
    assert model == "openai/gpt-4o-mini"
