"""Agent harnesses through two replicas sharing a private Redis, with the official SDKs:
sessions from the signals Claude Code and Codex send, lanes, precedence and bad input."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway.affinity import pin_key
from gateway.auth import DEFAULT_TENANT
from tests.configs import CODE, REASON
from tests.support import RedisServer, ThreadServer, gateway

MAIN_MODEL = "claude-sonnet-4-5-20250929"  # what Claude Code asks for: served through anthropic/*
SIDE_MODEL = "claude-haiku-4-5-20251001"


def harness_config(upstream: str, redis_url: str, **routing: Any) -> dict[str, Any]:
    return {
        "model_providers": [
            {"model": "anthropic/claude-sonnet-4-5", "base_url": upstream, "access_key": "sk-ant",
             "default": True},
            {"model": "openai/gpt-4o", "base_url": upstream, "access_key": "sk-oai"},
            {"model": "anthropic/*", "base_url": upstream, "access_key": "sk-ant"},
            {"model": "openai/*", "base_url": upstream, "access_key": "sk-oai"},
        ],
        "routing_preferences": [
            {"name": "code_generation", "description": "generating new code, writing functions",
             "models": ["anthropic/claude-sonnet-4-5"]},
            {"name": "complex_reasoning", "description": "multi-step analysis, detailed explanations",
             "models": ["openai/gpt-4o"]},
        ],
        "routing": {"session_cache": {"type": "redis", "url": redis_url, "socket_timeout_ms": 2000},
                    **routing},
    }


@pytest.fixture
def replicas(simulator: ThreadServer, redis_url: str) -> Iterator[list[ThreadServer]]:
    config = harness_config(simulator.url, redis_url)
    with gateway(config) as one, gateway(config) as two:
        yield [one, two]


class ClaudeCodeLike:
    """Requests shaped as Claude Code sends them: its session header on every request, the
    session in `metadata.user_id` as JSON, sub-agents with their own agent id."""

    def __init__(self, replicas: list[ThreadServer]) -> None:
        self.session = str(uuid.uuid4())
        self.clients = [anthropic.Anthropic(base_url=r.url, api_key="x", max_retries=0) for r in replicas]
        self.turn = 0
        self.user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": self.session})

    def send(self, text: str, model: str = MAIN_MODEL, agent: str | None = None,
             extra: dict[str, str] | None = None) -> Any:
        headers = {"X-Claude-Code-Session-Id": self.session, "anthropic-beta": "claude-code-20250219",
                   **(extra or {})}
        if agent is not None:
            headers["x-claude-code-agent-id"] = agent
            headers["x-claude-code-parent-agent-id"] = "main"
        client = self.clients[self.turn % len(self.clients)]
        self.turn += 1
        return client.messages.with_raw_response.create(
            model=model, max_tokens=64, system="You are Claude Code.",
            messages=[{"role": "user", "content": text}],
            metadata={"user_id": self.user_id}, extra_headers=headers,
        )

    def close(self) -> None:
        for client in self.clients:
            client.close()


def served(raw: Any) -> tuple[str, str, str]:
    return (raw.headers["x-gateway-model"], raw.headers["x-model-affinity-status"],
            raw.headers["x-model-affinity-source"])


def test_two_claude_code_sessions_at_once_keep_their_own_pins(replicas: list[ThreadServer]) -> None:
    sessions = [ClaudeCodeLike(replicas), ClaudeCodeLike(replicas)]
    first_turns = [CODE, REASON]  # session 0 starts on the coder, session 1 on gpt-4o
    results: dict[int, list[tuple[str, str, str]]] = {}

    def run(index: int) -> None:
        session = sessions[index]
        texts = [first_turns[index], *[[REASON, CODE][n % 2] for n in range(9)]]
        results[index] = [served(session.send(text)) for text in texts]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results[0][0] == ("anthropic/claude-sonnet-4-5", "new", "claude-code")
    assert results[1][0] == ("openai/gpt-4o", "new", "claude-code")
    for index, expected in ((0, "anthropic/claude-sonnet-4-5"), (1, "openai/gpt-4o")):
        assert {model for model, _, _ in results[index]} == {expected}
        assert [status for _, status, _ in results[index][1:]] == ["hit"] * 9
    for session in sessions:
        session.close()


def test_side_calls_and_sub_agents_keep_their_own_lanes(
    replicas: list[ThreadServer], simulator: ThreadServer
) -> None:
    session = ClaudeCodeLike(replicas)
    try:
        assert served(session.send(CODE)) == ("anthropic/claude-sonnet-4-5", "new", "claude-code")
        httpx.delete(f"{simulator.url}/_simulator/requests")
        side = session.send("hi", model=SIDE_MODEL)
        assert served(side) == (f"anthropic/{SIDE_MODEL}", "new", "claude-code")
        upstream = httpx.get(f"{simulator.url}/_simulator/requests").json()[-1]
        assert upstream["body"]["model"] == SIDE_MODEL  # the dated snapshot passed through as asked
        assert upstream["headers"]["anthropic-beta"] == "claude-code-20250219"
        assert served(session.send("hi again", model=SIDE_MODEL))[1:] == ("hit", "claude-code")
        # a sub-agent on the main model: a lane of its own, first routed on what it says
        assert served(session.send(REASON, agent="agent-1")) == ("openai/gpt-4o", "new", "claude-code")
        assert served(session.send(CODE, agent="agent-1")) == ("openai/gpt-4o", "hit", "claude-code")
        # the main loop's pin neither moved nor was borrowed
        assert served(session.send(REASON)) == ("anthropic/claude-sonnet-4-5", "hit", "claude-code")
        decision = httpx.post(
            f"{replicas[0].url}/routing/v1/messages",
            json={"model": MAIN_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": REASON}]},
            headers={"X-Claude-Code-Session-Id": session.session}).json()
        key = decision["session_id"]
        assert decision["pinned"] and decision["session_source"] == "claude-code"
        assert key.startswith("hs-") and session.session not in key
        assert decision["models"] == ["anthropic/claude-sonnet-4-5"]
        # the admin API lists the session's lanes (each replica has seen them all: turns alternate)
        pins = httpx.get(f"{replicas[1].url}/v1/affinity/{key}").json()
        lanes = {lane["lane"]: lane["model"] for lane in pins["lanes"]}
        assert lanes == {f"model:{MAIN_MODEL}": "anthropic/claude-sonnet-4-5",
                         f"model:{SIDE_MODEL}": f"anthropic/{SIDE_MODEL}", "agent:agent-1": "openai/gpt-4o"}
        one = httpx.get(f"{replicas[0].url}/v1/affinity/{key}", params={"lane": "agent:agent-1"}).json()
        assert [lane["model"] for lane in one["lanes"]] == ["openai/gpt-4o"]
        gone = httpx.delete(f"{replicas[0].url}/v1/affinity/{key}", params={"lane": "agent:agent-1"})
        assert gone.json()["lanes"] == ["agent:agent-1"]
        assert served(session.send(REASON))[1] == "hit"  # the other lanes stayed
    finally:
        session.close()


def test_a_replica_that_served_none_of_a_sessions_lanes_lists_and_deletes_them_all(
    replicas: list[ThreadServer],
) -> None:
    """The lanes live with the pins in Redis: the admin API of a replica that never saw the
    session finds a sub-agent's lane and a side call's (a name no config lists) too."""
    session = ClaudeCodeLike(replicas[:1])  # every turn through the first replica
    try:
        session.send(CODE)
        session.send("hi", model=SIDE_MODEL)
        session.send(REASON, agent="agent-7")
        key = httpx.post(f"{replicas[0].url}/routing/v1/messages", json={
            "model": MAIN_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
            headers={"X-Claude-Code-Session-Id": session.session}).json()["session_id"]
        listed = httpx.get(f"{replicas[1].url}/v1/affinity/{key}").json()
        assert [lane["lane"] for lane in listed["lanes"]] == [
            f"model:{MAIN_MODEL}", f"model:{SIDE_MODEL}", "agent:agent-7"]  # pinned first, first
        assert listed["model"] == "anthropic/claude-sonnet-4-5"  # the main loop's
        gone = httpx.delete(f"{replicas[1].url}/v1/affinity/{key}").json()
        assert sorted(gone["lanes"]) == sorted(lane["lane"] for lane in listed["lanes"])
        assert httpx.get(f"{replicas[0].url}/v1/affinity/{key}").status_code == 404
        assert served(session.send(REASON, agent="agent-7"))[1] == "new"  # deleted everywhere
    finally:
        session.close()


def test_with_a_sliding_ttl_a_lanes_hit_keeps_the_listing_and_the_admin_api_only_looks(
    simulator: ThreadServer, redis_server: RedisServer, redis_url: str
) -> None:
    """session_ttl_refresh: a sub-agent's turn restarts the session's lane listing with its
    pin, so a long session stays listed by every replica; reading it through the admin API
    extends nothing."""
    config = harness_config(simulator.url, redis_url, session_ttl_refresh=True)
    with gateway(config) as one, gateway(config) as two:
        session = ClaudeCodeLike([one])
        try:
            session.send(CODE)
            session.send(REASON, agent="agent-9")
            key = httpx.post(f"{one.url}/routing/v1/messages", json={
                "model": MAIN_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
                headers={"X-Claude-Code-Session-Id": session.session}).json()["session_id"]
            digest = pin_key(DEFAULT_TENANT, key).partition(":")[0]
            [listing] = redis_server.command("KEYS", f"*:s:{digest}")
            agent_digest = pin_key(DEFAULT_TENANT, key, "agent:agent-9").partition(":")[0]
            [agent_pin] = redis_server.command("KEYS", f"*:p:{agent_digest}")
            for stored in (listing, agent_pin):  # as if the session began long ago
                redis_server.command("PEXPIRE", stored, "5000")
            lanes = httpx.get(f"{two.url}/v1/affinity/{key}").json()["lanes"]
            assert [lane["lane"] for lane in lanes] == [f"model:{MAIN_MODEL}", "agent:agent-9"]
            assert int(redis_server.command("PTTL", agent_pin)) <= 5000  # looked at, not extended
            assert served(session.send(CODE, agent="agent-9"))[1] == "hit"
            assert int(redis_server.command("PTTL", agent_pin)) > 500_000
            assert int(redis_server.command("PTTL", listing)) > 500_000  # the listing lives on
        finally:
            session.close()


def test_past_32_sub_agents_the_main_loop_stays_listed_and_a_delete_takes_it(
    replicas: list[ThreadServer],
) -> None:
    """The main loop's model comes through a wildcard (no configured name lists it): had its
    lane been trimmed as the oldest, an admin DELETE would answer 200 and leave it pinned."""
    session = ClaudeCodeLike(replicas)
    try:
        assert served(session.send(CODE, model=SIDE_MODEL))[1] == "new"  # the main loop, first
        for n in range(34):
            session.send(REASON, agent=f"agent-{n}")
        key = httpx.post(f"{replicas[0].url}/routing/v1/messages", json={
            "model": SIDE_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
            headers={"X-Claude-Code-Session-Id": session.session}).json()["session_id"]
        for replica in replicas:
            listed = [lane["lane"] for lane in httpx.get(f"{replica.url}/v1/affinity/{key}").json()["lanes"]]
            assert listed[0] == f"model:{SIDE_MODEL}" and "agent:agent-33" in listed
        gone = httpx.delete(f"{replicas[1].url}/v1/affinity/{key}").json()["lanes"]
        assert f"model:{SIDE_MODEL}" in gone
        assert served(session.send(CODE, model=SIDE_MODEL))[1] == "new"  # really unpinned
    finally:
        session.close()


def test_explicit_header_wins_and_bad_input(replicas: list[ThreadServer]) -> None:
    session = ClaudeCodeLike(replicas)
    try:
        explicit = session.send(CODE, extra={"X-Model-Affinity": f"mine-{session.session}"})
        assert served(explicit)[1:] == ("new", "header")
        with pytest.raises(anthropic.BadRequestError) as error:
            session.send(CODE, extra={"X-Model-Affinity": "not valid!"})
        assert "X-Model-Affinity" in str(error.value)
        # a malformed harness header is skipped: the session comes from metadata.user_id
        skipped = session.send(CODE, extra={"X-Claude-Code-Session-Id": "x" * 2000})
        assert served(skipped)[1:] == ("new", "metadata")
        again = session.send(REASON)  # the header's session id is the metadata's: the same pin
        assert served(again) == ("anthropic/claude-sonnet-4-5", "hit", "claude-code")
    finally:
        session.close()


def test_codex_like_signals_through_the_openai_sdk(replicas: list[ThreadServer]) -> None:
    clients = [openai.OpenAI(base_url=f"{r.url}/v1", api_key="x", max_retries=0) for r in replicas]
    codex = str(uuid.uuid4())
    try:
        def turn(index: int, text: str, **extra: Any) -> tuple[str, str, str]:
            raw = clients[index % 2].chat.completions.with_raw_response.create(
                model="gpt-5-codex", messages=[{"role": "user", "content": text}], **extra)
            return served(raw)

        headers = {"session-id": codex, "x-codex-turn-metadata": json.dumps({"session_id": codex})}
        assert turn(0, REASON, extra_headers=headers, extra_body={"prompt_cache_key": codex}) == (
            "openai/gpt-4o", "new", "codex")
        assert turn(1, CODE, extra_headers=headers) == ("openai/gpt-4o", "hit", "codex")
        # the same id as prompt_cache_key only: the same session key, so the same pin
        assert turn(0, CODE, extra_body={"prompt_cache_key": codex}) == ("openai/gpt-4o", "hit",
                                                                          "prompt-cache-key")
        none = turn(1, "hello")
        assert none[1:] == ("none", "none")
        assert none[0] == "openai/gpt-5-codex"  # no route: the requested name, through openai/*
    finally:
        for client in clients:
            client.close()


def test_implicit_affinity_and_sources_turned_off(simulator: ThreadServer, redis_url: str) -> None:
    body = {"model": MAIN_MODEL, "max_tokens": 8, "system": "You are a reviewer.",
            "messages": [{"role": "user", "content": CODE}]}
    later = {**body, "messages": [*body["messages"], {"role": "assistant", "content": "ok"},
                                  {"role": "user", "content": REASON}]}
    with gateway(harness_config(simulator.url, redis_url, implicit_affinity=True)) as replica:
        first = httpx.post(f"{replica.url}/v1/messages", json=body)
        second = httpx.post(f"{replica.url}/v1/messages", json=later)
        assert [r.headers["x-model-affinity-source"] for r in (first, second)] == ["fingerprint"] * 2
        assert [r.headers["x-model-affinity-status"] for r in (first, second)] == ["new", "hit"]
        assert second.headers["x-gateway-model"] == "anthropic/claude-sonnet-4-5"
        metrics = httpx.get(f"{replica.url}/metrics").text
        assert 'gateway_affinity_sources_total{source="fingerprint"} 2.0' in metrics
    with gateway(harness_config(simulator.url, redis_url, session_sources=[])) as replica:
        off = httpx.post(f"{replica.url}/v1/messages", json=body,
                         headers={"X-Claude-Code-Session-Id": "s1"})
        assert (off.headers["x-model-affinity-status"], off.headers["x-model-affinity-source"]) == (
            "none", "none")
