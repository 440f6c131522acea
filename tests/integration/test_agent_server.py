"""examples/agent_server.py end to end: real uvicorn, a gateway replica, the simulator upstream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from examples.agent_server import create_app
from gateway.demo import config as demo_config
from tests.support import ThreadServer, gateway, serve

QUESTION = (
    "Should we use PostgreSQL or MongoDB for our shop? Use the tools to research both options, "
    "then give a recommendation."
)
TOOLS = ["get_db_benchmarks"] * 2 + ["get_case_studies"] * 2 + ["check_feature_support"] * 2


@pytest.fixture
def servers(simulator: ThreadServer, redis_url: str) -> Iterator[tuple[ThreadServer, ThreadServer]]:
    cache = demo_config.session_cache(redis_url, f"agw-test-{uuid.uuid4().hex[:8]}")
    config = demo_config.demo_config(demo_config.SIMULATED, cache, simulator.url)
    with gateway(config) as replica, serve(create_app(replica.url)) as agent:
        yield replica, agent


def ask(agent: ThreadServer, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{agent.url}/chat", json=body, headers=headers, timeout=30)


def test_a_session_keeps_one_model_for_every_step(
    servers: tuple[ThreadServer, ThreadServer],
) -> None:
    replica, agent = servers
    reply = ask(agent, {"question": QUESTION, "session_id": "shop-1"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    steps = body["steps"]
    assert [s["tools"] for s in steps] == [[name] for name in TOOLS] + [[]]
    # "new" then "hit" on every later step: the header went out on each call.
    assert [s["affinity"] for s in steps] == ["new"] + ["hit"] * 6
    assert {s["model"] for s in steps} == {demo_config.SIMULATED.selection}
    assert body["session_id"] == "shop-1" and body["answer"].startswith("Based on 6 tool results")
    pin = httpx.get(f"{replica.url}/v1/affinity/shop-1").json()
    assert pin["model"] == demo_config.SIMULATED.selection


def test_the_request_header_is_forwarded_too(servers: tuple[ThreadServer, ThreadServer]) -> None:
    replica, agent = servers
    reply = ask(agent, {"question": QUESTION}, **{"X-Model-Affinity": "shop-2"})
    assert reply.json()["session_id"] == "shop-2"
    assert {s["affinity"] for s in reply.json()["steps"][1:]} == {"hit"}
    assert httpx.get(f"{replica.url}/v1/affinity/shop-2").status_code == 200


def test_without_a_session_each_step_is_routed_afresh(
    servers: tuple[ThreadServer, ThreadServer],
) -> None:
    _, agent = servers
    steps = ask(agent, {"question": QUESTION}).json()["steps"]
    assert {s["affinity"] for s in steps} == {"none"}
    assert [s["route"] for s in steps] == [demo_config.TOOL_SELECTION] + [
        demo_config.RESULT_ANALYSIS
    ] * 6
    assert len({s["model"] for s in steps}) == 2


@pytest.mark.parametrize("body", [{}, {"question": ""}, [1], {"question": "q", "session_id": 5}])
def test_bad_requests_are_400(servers: tuple[ThreadServer, ThreadServer], body: Any) -> None:
    assert ask(servers[1], body).status_code == 400


def test_gateway_errors_pass_through(servers: tuple[ThreadServer, ThreadServer]) -> None:
    replica, agent = servers
    reply = ask(agent, {"question": QUESTION, "session_id": "bad id with spaces"})
    assert reply.status_code == 400
    assert "gateway:" in reply.json()["error"] and "affinity" in reply.json()["error"].lower()
    with serve(create_app(f"{replica.url}/nowhere")) as lost:  # the gateway answers 404
        reply = ask(lost, {"question": QUESTION})
    assert reply.status_code == 502 and reply.json()["error"].startswith("gateway: ")
