"""Requests captured from the real Claude Code and Codex CLIs, replayed through a real gateway.

The fixtures (tests/fixtures/harness/, see its README) are what `make interop` recorded, trimmed
and sanitized; here each is sent as captured (headers and body) to a gateway whose one model,
under the name the harness asked for, is served by the simulator: natively (an `anthropic`
provider, the request passed on) or translated (an `openai` provider). REPLAYS says what must
hold today, one line per fixture and provider kind; PENDING names the captures that wait for
a feature, with the reason. When a feature lands, a PENDING entry becomes a REPLAYS line.
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
SERVED = "claude-opus-4-8"  # the model the gateway knows by name; other names are PENDING


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


def served(provider: str) -> dict[str, str]:
    return {"x-gateway-model": f"{provider}/{SERVED}"}


REPLAYS = [
    Replay("claude_code_messages_first_turn", "anthropic", headers=served("anthropic"),
           forwarded=("anthropic-version",)),
    Replay("claude_code_messages_first_turn", "openai", headers=served("openai")),
    Replay("claude_code_messages_tool_results", "anthropic", headers=served("anthropic"),
           forwarded=("anthropic-version",)),
    Replay("claude_code_messages_tool_results", "openai", headers=served("openai")),
    Replay("claude_code_messages_subagent_claude_opus_4_8", "anthropic", headers=served("anthropic")),
    Replay("claude_code_messages_subagent_claude_opus_4_8", "openai", headers=served("openai")),
    Replay("claude_code_messages_title", "anthropic", headers=served("anthropic")),
    Replay("claude_code_messages_title", "openai", headers=served("openai")),
]

PENDING = {
    "claude_code_messages_system_in_messages":
        "400 today: a system role inside messages (issue 16, pass-through)",
    "claude_code_messages_subagent_claude_sonnet_5": "404 today: model not configured (wildcards)",
    "claude_code_messages_subagent_claude_haiku_4_5_20251001": "404 today: model not configured",
    "claude_code_messages_subagent_claude_fable_5": "404 today: model not configured (wildcards)",
    "codex_responses_first_turn": "404 today: no /v1/responses (issue 15)",
    "codex_responses_tool_output": "404 today: no /v1/responses (issue 15)",
    "codex_responses_classic_first_turn": "404 today: no /v1/responses (issue 15)",
    "codex_responses_classic_tool_output": "404 today: no /v1/responses (issue 15)",
}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def config(provider: str, upstream: str) -> dict[str, Any]:
    return {"model_providers": [
        {"model": f"{provider}/{SERVED}", "base_url": upstream, "access_key": "sk-provider-key",
         "default": True},
    ], "upstream": {"max_retries": 0}}


@pytest.fixture(scope="module")
def gateways(simulator: ThreadServer) -> Iterator[dict[str, ThreadServer]]:
    with gateway(config("anthropic", simulator.url)) as native, \
            gateway(config("openai", simulator.url)) as translated:
        yield {"anthropic": native, "openai": translated}


def test_every_fixture_is_replayed_or_pending() -> None:
    names = {path.stem for path in FIXTURES.glob("*.json")}
    replayed = {replay.fixture for replay in REPLAYS}
    assert names == replayed | set(PENDING)
    assert not replayed & set(PENDING)


@pytest.mark.parametrize("replay", REPLAYS, ids=str)
def test_replay(replay: Replay, gateways: dict[str, ThreadServer], simulator: ThreadServer) -> None:
    fixture = load(replay.fixture)
    httpx.delete(f"{simulator.url}/_simulator/requests")
    response = httpx.request(fixture["method"], gateways[replay.provider].url + fixture["path"],
                             headers=fixture["headers"], json=fixture["body"], timeout=30)
    assert response.status_code == replay.status, response.text
    for name, value in replay.headers.items():
        assert response.headers.get(name) == value, name
    if fixture["body"].get("stream"):
        events = [line[6:].strip() for line in response.text.splitlines() if line.startswith("event:")]
        assert events[0] == "message_start" and events[-1] == "message_stop", events
    upstream = httpx.get(f"{simulator.url}/_simulator/requests").json()
    assert len(upstream) == 1
    if replay.provider == "anthropic":
        # Same API: every field the harness sent reaches the provider as it was.
        assert upstream[0]["path"] == "/v1/messages"
        assert upstream[0]["body"] == fixture["body"]
    else:
        assert upstream[0]["path"] == "/v1/chat/completions"
        assert upstream[0]["body"]["model"] == SERVED
    for name in replay.forwarded:
        assert upstream[0]["headers"].get(name) == fixture["headers"][name], name
