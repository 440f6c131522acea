"""Session sources and lanes (gateway/sessions.py) over plain requests, and their config."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.apis import CHAT, MESSAGES
from gateway.config import parse_config
from gateway.config.reader import ConfigError
from gateway.errors import BadRequest
from gateway.sessions import Session, Sessions, harness_key

SESSION = "2f5e6a1c-0d4b-4f59-9d7e-7f1b3c2a9e10"


def config(**routing: Any) -> Any:
    return parse_config({
        "model_providers": [{"model": "anthropic/claude-sonnet-4", "access_key": "k", "default": True},
                            {"model": "anthropic/*", "access_key": "k"}],
        "routing": routing,
    }, environ={})


def find(headers: dict[str, str], body: dict[str, Any] | None = None, api: Any = MESSAGES,
         sessions: Sessions | None = None, tenant: str = "t") -> Session | None:
    sessions = sessions or Sessions(config())
    payload = {"model": "claude-sonnet-4", "max_tokens": 8,
               "messages": [{"role": "user", "content": "hi"}], **(body or {})}
    request = api.parse(orjson.dumps(payload), 100)
    scope = {"headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]}
    return sessions.find(sessions.scan(scope), request, tenant)


def test_each_default_source_names_itself_and_is_hashed() -> None:
    cases = [
        ({"X-Claude-Code-Session-Id": SESSION}, {}, "claude-code"),
        ({"session-id": SESSION}, {}, "codex"),
        ({"session_id": SESSION}, {}, "codex"),
        ({"x-session-id": SESSION}, {}, "session-header"),
        ({}, {"prompt_cache_key": SESSION}, "prompt-cache-key"),
        ({}, {"metadata": {"user_id": SESSION}}, "metadata"),
        ({}, {"metadata": {"user_id": orjson.dumps({"device_id": "d", "session_id": SESSION}).decode()}},
         "metadata"),
    ]
    for headers, body, source in cases:
        session = find(headers, body)
        assert session is not None and session.source == source, (headers, body)
        # the raw value is nowhere in the key; the same session id gives the same key from any source
        assert session.affinity_id == harness_key(SESSION) and SESSION not in session.affinity_id
        assert session.lane == "model:claude-sonnet-4"


def test_metadata_json_without_session_id_keys_on_the_whole_value() -> None:
    raw = orjson.dumps({"device_id": "d"}).decode()
    lane = "model:claude-sonnet-4"
    assert find({}, {"metadata": {"user_id": raw}}) == Session(harness_key(raw), "metadata", lane)
    broken = '{"session_id": 1'
    assert find({}, {"metadata": {"user_id": broken}}) == Session(
        harness_key(broken), "metadata", "model:claude-sonnet-4")


def test_precedence_explicit_then_the_configured_order() -> None:
    everything = {"X-Model-Affinity": "mine", "X-Claude-Code-Session-Id": "cc", "session-id": "cx",
                  "x-session-id": "sh"}
    body = {"prompt_cache_key": "pk", "metadata": {"user_id": "md"}}
    assert find(everything, body) == Session("mine", "header", "model:claude-sonnet-4")
    del everything["X-Model-Affinity"]
    assert find(everything, body).source == "claude-code"  # type: ignore[union-attr]
    reordered = Sessions(config(session_sources=["metadata", "codex"]))
    assert find(everything, body, sessions=reordered) == Session(harness_key("md"), "metadata",
                                                                 "model:claude-sonnet-4")
    assert find({"x-session-id": "sh"}, sessions=reordered) is None  # turned off by leaving it out
    assert find(everything, body, sessions=Sessions(config(session_sources=[]))) is None
    own = Sessions(config(session_sources=[{"header": "X-My-Session"}]))
    assert find({"x-my-session": "s"}, sessions=own) == Session(harness_key("s"), "session-header",
                                                                "model:claude-sonnet-4")


def test_malformed_harness_values_are_skipped_and_an_explicit_bad_id_is_a_400() -> None:
    for bad in ("", "   ", "x" * 1025):
        session = find({"X-Claude-Code-Session-Id": bad}, {"metadata": {"user_id": "fallback"}})
        assert session is not None and session.source == "metadata"
    assert find({}, {"prompt_cache_key": 42, "metadata": {"user_id": ["not", "a", "string"]}}) is None
    assert find({}, {"metadata": "not an object"}) is None
    with pytest.raises(BadRequest) as error:
        find({"X-Model-Affinity": "bad id", "X-Claude-Code-Session-Id": SESSION})
    assert error.value.code == "invalid_affinity_id"


def test_lanes_are_the_sub_agent_else_the_requested_model() -> None:
    main = find({"X-Claude-Code-Session-Id": SESSION})
    side = find({"X-Claude-Code-Session-Id": SESSION}, {"model": "claude-haiku-4-5-20251001"})
    agent = find({"X-Claude-Code-Session-Id": SESSION, "x-claude-code-agent-id": "agent-7"})
    auto = find({"X-Claude-Code-Session-Id": SESSION}, {"model": "auto"})
    assert main and side and agent and auto
    assert main.affinity_id == side.affinity_id == agent.affinity_id
    assert [main.lane, side.lane, agent.lane, auto.lane] == [
        "model:claude-sonnet-4", "model:claude-haiku-4-5-20251001", "agent:agent-7", "model:"]
    own = Sessions(config(lane_headers=["X-Task-Id"]))
    both = {"x-session-id": "s", "x-task-id": "t1", "x-claude-code-agent-id": "a"}
    assert find(both, sessions=own).lane == "agent:t1"  # type: ignore[union-attr]
    too_long = find({"x-session-id": "s", "x-task-id": "y" * 300}, sessions=own)
    assert too_long is not None and too_long.lane == "model:claude-sonnet-4"  # skipped, not an error


def test_fingerprint_is_opt_in_and_keys_on_the_conversation_start() -> None:
    body = {"system": "you are a coder", "tools": [{"name": "read", "input_schema": {}}]}
    assert find({}, body) is None
    implicit = Sessions(config(implicit_affinity=True))
    first = find({}, body, sessions=implicit)
    later = find({}, {**body, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "next"}]}, sessions=implicit)
    assert first is not None and first.source == "fingerprint" and first == later
    other_tenant = find({}, body, sessions=implicit, tenant="u")
    other_tools = find({}, {**body, "tools": [{"name": "write", "input_schema": {}}]}, sessions=implicit)
    assert first.affinity_id not in {other_tenant.affinity_id, other_tools.affinity_id}  # type: ignore[union-attr]
    # Claude Code's billing block changes between prompts of one session: not part of it
    billing = "x-anthropic-billing-header: cc_version=2.1.197.{}; cc_entrypoint=cli;"
    billed = [{"type": "text", "text": billing.format("a1f")}, {"type": "text", "text": "you are a coder"}]
    rebilled = [{"type": "text", "text": billing.format("9c2")}, {"type": "text", "text": "you are a coder"}]
    assert find({}, {**body, "system": billed}, sessions=implicit) == find(
        {}, {**body, "system": rebilled}, sessions=implicit) == first
    chat = find({}, {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                     "tools": [{"type": "function", "function": {"name": "f"}}]}, api=CHAT, sessions=implicit)
    assert chat is not None and chat.source == "fingerprint"


def test_previous_response_id_is_no_session_key() -> None:
    """A follow-up's model comes from the stored response it continues (the decider), not
    from a key: alone it is no session, and it never outranks a harness signal."""
    assert find({}, {"previous_response_id": "resp_1"}) is None
    session = find({"X-Claude-Code-Session-Id": SESSION}, {"previous_response_id": "resp_1"})
    assert session is not None and session.source == "claude-code"


def test_upstream_headers_are_collected_in_the_same_pass() -> None:
    sessions = Sessions(config())
    seen = sessions.scan({"headers": [(b"anthropic-beta", b"a"), (b"anthropic-beta", b"b"),
                                      (b"openai-beta", b"assistants=v2"), (b"x-other", b"1")]})
    assert seen.forward == (("anthropic", "anthropic-beta", "a"), ("anthropic", "anthropic-beta", "b"),
                            ("openai", "openai-beta", "assistants=v2"))


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"session_sources": ["claude"]}, "routing.session_sources[0]: unknown session source 'claude'"),
        ({"session_sources": [{"header": "bad header"}]}, "routing.session_sources[0].header"),
        ({"session_sources": [{"header": "x", "extra": 1}]}, "routing.session_sources[0].extra: unknown key"),
        ({"unknown_model": "maybe"}, "routing.unknown_model"),
        ({"implicit_affinity": 7}, "routing.implicit_affinity"),
    ],
)
def test_bad_session_config_names_the_key(routing: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config(**routing)


def test_wildcards_resolve_their_provider_and_family() -> None:
    cfg = parse_config({
        "model_providers": [
            {"model": "openai/gpt-4o-mini", "access_key": "k", "default": True},
            {"model": "anthropic/*", "access_key": "ka", "base_url": "http://sim:1"},
            {"model": "ollama/*", "base_url": "http://ollama:11434", "model_prefixes": ["llama"]},
        ],
        "model_aliases": {"small": {"target": "anthropic/claude-haiku-4-5"}},
    }, environ={})
    opus = cfg.resolve("claude-opus-4-8")
    assert opus is not None and (opus.model, opus.model_id, opus.access_key) == (
        "anthropic/claude-opus-4-8", "claude-opus-4-8", "ka")
    assert opus.api_base == "http://sim:1/v1" and opus.interface == "anthropic"
    assert cfg.resolve("anthropic/claude-haiku-4-5-20251001").model_id == "claude-haiku-4-5-20251001"  # type: ignore[union-attr]
    assert cfg.resolve("llama3.1:8b").model == "ollama/llama3.1:8b"  # type: ignore[union-attr]
    assert cfg.resolve("small").model == "anthropic/claude-haiku-4-5"  # type: ignore[union-attr]
    assert cfg.resolve("gpt-4o-mini").model == "openai/gpt-4o-mini"  # type: ignore[union-attr]
    for unknown in ("gpt-5", "mystery", "anthropic/", "claude x", "claude-\r\nx: y"):
        assert cfg.resolve(unknown) is None, unknown
    assert cfg.default_model == "openai/gpt-4o-mini"


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        ([{"model": "anthropic/*", "default": True}], r"model_providers\[0\].default: a wildcard"),
        ([{"model": "anthropic/*"}], "model_providers: a concrete model"),
        ([{"model": "openai/gpt-4o", "model_prefixes": ["gpt"]}], r"model_providers\[0\].model_prefixes"),
    ],
)
def test_bad_wildcards_name_the_key(providers: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"model_providers": providers}, environ={})
