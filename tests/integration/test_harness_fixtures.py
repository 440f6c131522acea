"""Requests captured from the real Claude Code and Codex CLIs, replayed through a real gateway.

The fixtures (tests/fixtures/harness/, see its README) are what `make interop` recorded, trimmed
and sanitized; here each is sent as captured (headers and body) to a gateway whose models are
served by the simulator: one by name (the default) and every other name the harness asks for
through a provider wildcard, natively (`anthropic/*`: Messages passed on, Responses translated
to Messages) or the other way (`openai/*`: Messages translated to Chat Completions, Responses
passed on natively). REPLAYS says what must hold, one line per fixture and provider kind; a
PENDING entry would name a capture that waits for a feature (none do now). The Claude Code
session fixture is replayed across two replicas sharing a private Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support import ThreadServer, fixture_path, gateway

FIXTURES = fixture_path("harness")
SERVED = "claude-opus-4-8"  # the model the gateway knows by name; the others come through a wildcard
SESSION = "claude_code_session_lanes"  # a whole session (several requests), replayed on its own


@dataclass(frozen=True)
class Replay:
    fixture: str  # file name without .json
    provider: str  # anthropic: same API, passed on | openai: translated
    status: int = 200
    # Response headers that must have these values.
    headers: dict[str, str] = field(default_factory=dict)
    # Request headers that must reach the provider unchanged (same-API pass-through).
    forwarded: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.fixture}-{self.provider}"


def served(provider: str, model: str = SERVED) -> dict[str, str]:
    return {"x-gateway-model": f"{provider}/{model}"}


def codex(provider: str, fixture: str) -> dict[str, str]:
    # Codex's session (its `session-id` header): the model it asked for, through the wildcard.
    model = "gpt-5-codex" if "classic" in fixture else "gpt-6.2-sol"
    return {"x-gateway-model": f"{provider}/{model}", "x-model-affinity-source": "codex"}


SUBAGENTS = ("claude_sonnet_5", "claude_haiku_4_5_20251001", "claude_fable_5")
SUBAGENT_MODELS = {"claude_sonnet_5": "claude-sonnet-5", "claude_haiku_4_5_20251001":
                   "claude-haiku-4-5-20251001", "claude_fable_5": "claude-fable-5"}
CODEX = ("codex_responses_first_turn", "codex_responses_tool_output",
         "codex_responses_classic_first_turn", "codex_responses_classic_tool_output")
BETA = ("anthropic-version", "anthropic-beta")

REPLAYS = [
    *(Replay(name, "anthropic", headers=served("anthropic") | {"x-model-affinity-source": "claude-code"},
             forwarded=BETA)
      for name in ("claude_code_messages_first_turn", "claude_code_messages_tool_results",
                   "claude_code_messages_subagent_claude_opus_4_8", "claude_code_messages_title",
                   # a system role at messages[1]: passed on as sent
                   "claude_code_messages_system_in_messages")),
    *(Replay(name, "openai", headers=served("openai"))
      for name in ("claude_code_messages_first_turn", "claude_code_messages_tool_results",
                   "claude_code_messages_subagent_claude_opus_4_8", "claude_code_messages_title",
                   # a system role at messages[1]: an OpenAI system message
                   "claude_code_messages_system_in_messages")),
    # Sub-agent model names nobody configured: served through the wildcard.
    *(Replay(f"claude_code_messages_subagent_{name}", kind, headers=served(kind, SUBAGENT_MODELS[name]),
             forwarded=BETA if kind == "anthropic" else ())
      for name in SUBAGENTS for kind in ("anthropic", "openai")),
    # Codex through /v1/responses: translated to Messages (anthropic/*) or passed on (openai/*).
    *(Replay(name, kind, headers=codex(kind, name)) for name in CODEX for kind in ("anthropic", "openai")),
]

PENDING: dict[str, str] = {}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def config(provider: str, upstream: str, **routing: Any) -> dict[str, Any]:
    return {"model_providers": [
        {"model": f"{provider}/{SERVED}", "base_url": upstream, "access_key": "sk-provider-key",
         "default": True},
        # Every other name either harness sends (claude-..., gpt-...), on the same provider.
        {"model": f"{provider}/*", "base_url": upstream, "access_key": "sk-provider-key",
         "model_prefixes": ["claude", "gpt"]},
    ], "upstream": {"max_retries": 0}, "routing": routing}


@pytest.fixture(scope="module")
def gateways(simulator: ThreadServer) -> Iterator[dict[str, ThreadServer]]:
    with gateway(config("anthropic", simulator.url)) as native, \
            gateway(config("openai", simulator.url)) as translated:
        yield {"anthropic": native, "openai": translated}


def test_every_fixture_is_replayed_or_pending() -> None:
    names = {path.stem for path in FIXTURES.glob("*.json")} - {SESSION}
    replayed = {replay.fixture for replay in REPLAYS}
    assert names == replayed | set(PENDING)
    assert not replayed & set(PENDING)


def replay_once(url: str, fixture: dict[str, Any]) -> httpx.Response:
    return httpx.request(fixture["method"], url + fixture["path"], headers=fixture["headers"],
                         json=fixture["body"], timeout=30)


@pytest.mark.parametrize("replay", REPLAYS, ids=str)
def test_replay(replay: Replay, gateways: dict[str, ThreadServer], simulator: ThreadServer) -> None:
    fixture = load(replay.fixture)
    httpx.delete(f"{simulator.url}/_simulator/requests")
    response = replay_once(gateways[replay.provider].url, fixture)
    assert response.status_code == replay.status, response.text
    for name, value in replay.headers.items():
        assert response.headers.get(name) == value, name
    assert response.headers["x-model-affinity-status"] in ("new", "hit")  # the session is pinned
    events = [line[6:].strip() for line in response.text.splitlines() if line.startswith("event:")]
    responses_api = fixture["path"] == "/v1/responses"
    if responses_api:
        assert events[0] == "response.created" and events[-1] == "response.completed", events
    else:
        assert events[0] == "message_start" and events[-1] == "message_stop", events
    upstream = httpx.get(f"{simulator.url}/_simulator/requests").json()
    assert len(upstream) == 1
    model = replay.headers["x-gateway-model"].split("/", 1)[1]
    native = (replay.provider == "anthropic") != responses_api  # same API on both sides
    if native:
        # Same API: every field the harness sent reaches the provider as it was.
        assert upstream[0]["path"] == fixture["path"]
        assert upstream[0]["body"] == fixture["body"]
    elif responses_api:  # Responses -> Messages: the tools Codex offers, as Anthropic tools
        assert upstream[0]["path"] == "/v1/messages"
        assert upstream[0]["body"]["model"] == model
        names = {tool["name"] for tool in upstream[0]["body"].get("tools", [])}
        assert "exec" in names or "exec_command" in names, names
    else:
        assert upstream[0]["path"] == "/v1/chat/completions"
        assert upstream[0]["body"]["model"] == model
        if replay.fixture == "claude_code_messages_system_in_messages":
            roles = [m["role"] for m in upstream[0]["body"]["messages"]]
            assert roles.count("system") == 2, roles  # the system prompt and the one in messages
    for name in replay.forwarded:
        assert upstream[0]["headers"].get(name) == fixture["headers"][name], name
    again = replay_once(gateways[replay.provider].url, fixture)
    assert again.status_code == replay.status, again.text
    assert again.headers["x-model-affinity-status"] == "hit"
    assert again.headers["x-gateway-model"] == response.headers["x-gateway-model"]


def test_codex_custom_tool_calls_come_back_as_custom_tool_calls(gateways: dict[str, ThreadServer]) -> None:
    """Codex's default model offers its shell as a custom tool (`exec`) inside an
    `additional_tools` input item; the simulated model calls it first, and Codex must get a
    `custom_tool_call` with the input text, not a function call, whichever way it was served."""
    fixture = load("codex_responses_first_turn")
    for kind in ("anthropic", "openai"):
        body = fixture["body"] | {"stream": False, "prompt_cache_key": f"custom-{kind}"}
        response = httpx.post(gateways[kind].url + "/v1/responses", json=body, timeout=30,
                              headers={k: v for k, v in fixture["headers"].items() if k != "session-id"})
        assert response.status_code == 200, response.text
        output = response.json()["output"]
        assert [item["type"] for item in output] == ["custom_tool_call"], output
        assert output[0]["name"] == "exec" and isinstance(output[0]["input"], str)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_claude_code_session_across_two_replicas(
    provider: str, simulator: ThreadServer, redis_url: str
) -> None:
    """A captured Claude Code session with sub-agents, its requests sent in turn to two
    replicas sharing a Redis: one model per lane for the whole run, `new` on each lane's first
    request and `hit` on every later one."""
    requests = json.loads((FIXTURES / f"{SESSION}.json").read_text())["requests"]
    settings = config(provider, simulator.url, session_cache={"type": "redis", "url": redis_url})
    models: dict[str, set[str]] = {}
    statuses: dict[str, list[str]] = {}
    with gateway(settings) as one, gateway(settings) as two:
        for turn, fixture in enumerate(requests):
            response = replay_once((one, two)[turn % 2].url, fixture)
            assert response.status_code == 200, response.text
            assert response.headers["x-model-affinity-source"] == "claude-code"
            lane = fixture["headers"].get("x-claude-code-agent-id") or fixture["body"]["model"]
            models.setdefault(lane, set()).add(response.headers["x-gateway-model"])
            statuses.setdefault(lane, []).append(response.headers["x-model-affinity-status"])
    assert len(models) == 5  # the main loop and four sub-agents
    assert all(len(served) == 1 for served in models.values()), models
    assert all(s[0] == "new" and set(s[1:]) == {"hit"} for s in statuses.values()), statuses
