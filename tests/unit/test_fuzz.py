"""Fuzzing: the config loader, the SSE decoder, the stream translators, and the HTTP surface.

Hypothesis drives the parsers with arbitrary and mutated input; schemathesis drives a real
replica from the OpenAPI document. The budgets are small (the file runs in well under a
minute); each property names what may never happen.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.apis import chat, messages
from gateway.config import ConfigError, load_config, parse_config
from gateway.errors import BadRequest
from gateway.openapi import openapi_document
from gateway.providers.anthropic_stream import ChatToMessagesStream, MessagesToChatStream
from gateway.sse import ServerSentEvent, SSEDecoder, encode_event
from tests.configs import three_models
from tests.support import ThreadServer, gateway

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- The config loader: ConfigError and nothing else ---------------------------------------

# Strings that have broken parsers before: unicode digits, doubled signs, numbers too long for
# a float, interpolation, durations, booleans in words.
AWKWARD = ["\u00b2", "\u0663", "--5", "+7", "9" * 400, "1e999", "nan", "-inf", "$X", "${X:-}",
           "${NOPE}", "$$", "30s", "500ms", "2m", "0", "-1", " 5 ", "true", "off", "",
           "redis://127.0.0.1:1", "openai/gpt-4o", "gpt-4o", "fast", "llm", "memory"]
KEYS = ["version", "listeners", "model_providers", "routing_preferences", "model_aliases", "routing",
        "upstream", "limits", "auth", "logging", "server", "metrics", "overrides", "model",
        "base_url", "access_key", "default", "name", "description", "models", "router", "type",
        "session_cache", "url", "timeout", "port", "keys", "admin_keys", "sentinel", "target"]
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
           | st.sampled_from(AWKWARD))
yaml_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(), inner, max_size=4),
    max_leaves=25,
)


def full_config() -> dict[str, Any]:
    """A valid config that sets every section, so a mutation can reach every getter."""
    config = three_models("http://127.0.0.1:9")
    config.update({
        "listeners": [{"type": "model", "name": "l", "address": "127.0.0.1", "port": 12000,
                       "timeout": "30s"}],
        "routing": {"router": {"type": "builtin", "threshold": 0.2, "timeout_ms": 300},
                    "session_ttl_seconds": 600, "session_max_entries": 100,
                    "session_ttl_refresh": False, "on_pinned_failure": "error",
                    "session_cache": {"type": "redis", "url": "redis://127.0.0.1:1",
                                      "tenant_header": "x-tenant", "socket_timeout_ms": 100,
                                      "pool_size": 4, "breaker_cooldown_ms": 10}},
        "upstream": {"connect_timeout_ms": 100, "first_byte_timeout_ms": 100, "read_timeout_ms": 100,
                     "total_timeout_ms": 1000, "max_retries": 1, "retry_backoff_ms": 1,
                     "max_connections": 10},
        "limits": {"max_body_bytes": 4096, "max_messages": 10, "max_header_bytes": 4096,
                   "max_concurrent_per_tenant": 2},
        "auth": {"keys": [{"key": "k", "tenant": "t"}], "admin_keys": ["a"]},
        "logging": {"level": "info", "format": "json"},
        "server": {"drain_timeout_seconds": 5},
        "metrics": {"enabled": True},
    })
    return config


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON-like value (the root, `()`, not included)."""
    found = [prefix] if prefix else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        found += paths(value, (*prefix, key))
    return found


def mutate(data: Any, path: tuple[Any, ...], value: Any, how: str) -> Any:
    """A copy of `data` with the node at `path` replaced by `value`, deleted, or (`unknown
    key`, on an object) given an extra key; an empty path replaces the whole."""
    if not path:
        return value
    data = copy.deepcopy(data)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if how == "delete":
        del parent[path[-1]]
    elif how == "unknown key" and isinstance(parent[path[-1]], dict):
        parent[path[-1]]["surprise"] = value
    else:
        parent[path[-1]] = value
    return data


FULL = full_config()
PATHS = paths(FULL)


def parse_only_config_errors(data: Any) -> None:
    try:
        parse_config(data, environ={"X": "1"})
    except ConfigError as error:
        assert str(error) and "Traceback" not in str(error)
    # any other exception fails the test, with hypothesis' minimal example


def test_the_full_config_is_valid() -> None:
    assert parse_config(full_config(), environ={}).upstream.max_retries == 1


@FUZZ
@given(yaml_like)
def test_arbitrary_data_raises_only_config_error(data: Any) -> None:
    parse_only_config_errors(data)


@FUZZ
@given(st.sampled_from(PATHS), yaml_like, st.sampled_from(["replace", "delete", "unknown key"]))
@example(("upstream", "max_retries"), "\u00b2", "replace")
@example(("limits", "max_messages"), "--5", "replace")
@example(("listeners", 0, "timeout"), "9" * 400, "replace")
def test_mutated_valid_configs_raise_only_config_error(
    path: tuple[Any, ...], value: Any, how: str
) -> None:
    parse_only_config_errors(mutate(FULL, path, value, how))


@settings(FUZZ, max_examples=60)
@given(st.text(alphabet=st.sampled_from("ab: -[]{}\n&*!?'\"$%#|>"), max_size=60)
       | yaml_like.map(json.dumps))  # JSON is YAML
@example("[" * 5000)
@example("a: {" * 2000)
def test_arbitrary_yaml_files_raise_only_config_error(tmp_path_factory: Any, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("yaml")) / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path, environ={})
    except ConfigError:
        pass


# --- The SSE decoder: any bytes, any split, the same events --------------------------------

sse_bytes = st.lists(
    st.sampled_from([b"data:", b"data: x", b"event: e", b": c", b"id: 1", b"retry: 5", b" ",
                     b"\r", b"\n", b"\r\n", b"{}", "\u00e9\U0001f680".encode(), b"\xff",
                     b"\xef\xbb\xbf", b"\xe2\x82", b"[DONE]"])
    | st.binary(max_size=8),
    max_size=30,
).map(b"".join)


def cuts(raw: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(raw) + 1) for p in points})
    return [raw[a:b] for a, b in zip([0, *marks], [*marks, len(raw)], strict=True)]


def decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.flush()


@FUZZ
@given(sse_bytes, st.lists(st.integers(min_value=0), max_size=12))
def test_sse_decoder_survives_any_bytes_and_is_split_invariant(raw: bytes, points: list[int]) -> None:
    whole = decode([raw])
    assert decode(cuts(raw, points)) == whole
    assert decode([bytes([b]) for b in raw]) == whole


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=20), st.none() | st.text(
    st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), min_size=1, max_size=8)),
    max_size=5))
def test_sse_encode_then_decode_round_trips(events: list[tuple[str, str | None]]) -> None:
    raw = b"".join(encode_event(data, event) for data, event in events)
    expected = [(re.sub(r"\r\n|\r", "\n", data), event) for data, event in events]
    assert [(e.data, e.event) for e in decode(cuts(raw, [len(raw) // 3, len(raw) // 2]))] == expected


# --- The stream translators: any upstream stream, any split, a well-formed client stream ----

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right shape, sometimes anything: where translators meet surprises."""
    return st.one_of(strategy, strategy, strategy, json_value)


index = maybe(st.integers(0, 3))
anthropic_events = st.one_of(
    st.fixed_dictionaries({"type": st.just("message_start"), "message": maybe(st.fixed_dictionaries(
        {"id": maybe(st.text(max_size=6)), "usage": maybe(st.fixed_dictionaries(
            {"input_tokens": maybe(st.integers(0, 99))}))}))}),
    st.fixed_dictionaries({"type": st.just("content_block_start"), "index": index,
                           "content_block": maybe(st.fixed_dictionaries({
                               "type": st.sampled_from(["text", "tool_use", "thinking"]),
                               "id": maybe(st.text(max_size=4)), "name": maybe(st.text(max_size=4)),
                               "text": maybe(st.text(max_size=4))}))}),
    st.fixed_dictionaries({"type": st.just("content_block_delta"), "index": index,
                           "delta": maybe(st.fixed_dictionaries({
                               "type": st.sampled_from(["text_delta", "input_json_delta", "x"]),
                               "text": maybe(st.text(max_size=6)),
                               "partial_json": maybe(st.text(max_size=6))}))}),
    st.fixed_dictionaries({"type": st.just("content_block_stop"), "index": index}),
    st.fixed_dictionaries({"type": st.just("message_delta"), "delta": maybe(st.fixed_dictionaries(
        {"stop_reason": maybe(st.sampled_from(["end_turn", "tool_use", "max_tokens"]))})),
        "usage": maybe(st.fixed_dictionaries({"output_tokens": maybe(st.integers(0, 99))}))}),
    st.sampled_from([{"type": "message_stop"}, {"type": "ping"},
                     {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}]),
    json_value,
)
openai_chunks = st.one_of(
    st.fixed_dictionaries({
        "id": maybe(st.text(max_size=6)),
        "choices": maybe(st.lists(maybe(st.fixed_dictionaries({
            "index": index,
            "delta": maybe(st.fixed_dictionaries({
                "role": maybe(st.just("assistant")), "content": maybe(st.text(max_size=6)),
                "tool_calls": maybe(st.lists(maybe(st.fixed_dictionaries({
                    "index": index, "id": maybe(st.text(max_size=4)),
                    "function": maybe(st.fixed_dictionaries({
                        "name": maybe(st.text(max_size=4)),
                        "arguments": maybe(st.text(max_size=6))}))})), max_size=2))})),
            "finish_reason": maybe(st.sampled_from(["stop", "tool_calls", "length"]))})),
            max_size=2)),
        "usage": maybe(st.none() | st.fixed_dictionaries({"prompt_tokens": maybe(st.integers(0, 9)),
                                                         "completion_tokens": st.integers(0, 9)}))}),
    st.just("[DONE]"),
    json_value,
)


# The stdlib encoder, not orjson: upstreams may send integers past 64 bits, and Infinity.
def anthropic_stream(events: list[Any]) -> bytes:
    out = b""
    for event in events:
        name = event.get("type") if isinstance(event, dict) else None
        out += encode_event(json.dumps(event), name if isinstance(name, str) and name.isprintable()
                            else None)
    return out


def openai_stream(chunks: list[Any]) -> bytes:
    return b"".join(encode_event(c if c == "[DONE]" else json.dumps(c)) for c in chunks)


def upstream_bytes(events: st.SearchStrategy[Any], render: Any) -> st.SearchStrategy[bytes]:
    well_formed = st.lists(events, max_size=8).map(render)
    return st.one_of(well_formed, well_formed, st.tuples(well_formed, sse_bytes).map(b"".join))


_RANDOM_IDS = re.compile(rb"(chatcmpl-|msg_|toolu_)[0-9a-f]{24,32}")


def translate(make: Any, pieces: list[bytes]) -> bytes:
    translator = make()
    out = b"".join(translator.feed(piece) for piece in pieces) + translator.close()
    assert translator.feed(b"data: {}\n\n") == b"" and translator.close() == b""  # ended is ended
    return _RANDOM_IDS.sub(rb"\1<id>", out)


def client_events(raw: bytes) -> list[ServerSentEvent]:
    events = decode([raw])
    for event in events:  # every event the client gets is JSON (or the [DONE] sentinel)
        assert event.data == "[DONE]" or isinstance(orjson.loads(event.data), dict), event
    return events


@FUZZ
@given(upstream_bytes(anthropic_events, anthropic_stream), st.lists(st.integers(0), max_size=8))
def test_anthropic_to_openai_stream_is_well_formed_whatever_the_upstream_sends(
    raw: bytes, points: list[int]
) -> None:
    def make() -> MessagesToChatStream:
        return MessagesToChatStream("m", include_usage=True, created=0)

    whole = translate(make, [raw])
    assert translate(make, cuts(raw, points)) == whole
    events = client_events(whole)
    assert [e.data for e in events].count("[DONE]") == 1 and events[-1].data == "[DONE]"


@FUZZ
@given(upstream_bytes(openai_chunks, openai_stream), st.lists(st.integers(0), max_size=8))
def test_openai_to_anthropic_stream_is_well_formed_whatever_the_upstream_sends(
    raw: bytes, points: list[int]
) -> None:
    whole = translate(lambda: ChatToMessagesStream("m"), [raw])
    assert translate(lambda: ChatToMessagesStream("m"), cuts(raw, points)) == whole
    names = [e.event for e in client_events(whole)]
    assert names[-1] in ("message_stop", "error")
    assert names.count("message_stop") + names.count("error") == 1
    assert names[0] in ("message_start", "error")


# --- The request parsers: any JSON body is a request or a 400 -------------------------------

chat_bodies = st.fixed_dictionaries(
    {"messages": maybe(st.lists(maybe(st.fixed_dictionaries(
        {"role": maybe(st.sampled_from(["user", "assistant", "system", "tool"])),
         "content": maybe(st.text(max_size=5) | st.lists(json_value, max_size=2))})), max_size=3))},
    optional={"model": maybe(st.text(max_size=5)), "stream": maybe(st.booleans()),
              "system": json_value, "stream_options": json_value},
)


@FUZZ
@given(chat_bodies | json_value)
@example({"messages": [{"role": {}}]})
@example({"messages": [{"role": []}]})
def test_request_parsers_raise_only_bad_request(body: Any) -> None:
    raw = json.dumps(body).encode()
    for parse in (chat.parse, messages.parse):
        try:
            request = parse(raw, 100)
        except BadRequest as error:
            assert error.status == 400
        else:
            # Roles a parser does not know pass to the provider, so turns may be empty.
            assert isinstance(request.turns, list) and isinstance(request.stream, bool)


# --- The HTTP surface: schemathesis against a real replica ---------------------------------

OPERATIONS = [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/messages"),
    ("POST", "/routing/v1/chat/completions"), ("POST", "/routing/v1/messages"),
    ("GET", "/v1/affinity/{affinity_id}"), ("DELETE", "/v1/affinity/{affinity_id}"),
    ("GET", "/v1/models"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
]
WITH_INPUT = {path for method, path in OPERATIONS if method == "POST" or "{" in path}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def replica(simulator: ThreadServer) -> Any:
    config = three_models(simulator.url)
    with gateway(config) as server:
        yield server, openapi_document(parse_config(config, environ={}))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_http_surface_under_schemathesis(
    replica: tuple[ThreadServer, dict[str, Any]], method: str, path: str, mode: GenerationMode
) -> None:
    server, document = replica
    if mode is GenerationMode.NEGATIVE and path not in WITH_INPUT:
        mode = GenerationMode.POSITIVE  # nothing to make invalid: fuzz the valid side twice
    operation = schemathesis.openapi.from_dict(document)[path][method]

    @settings(FUZZ, max_examples=25 if path in WITH_INPUT else 5)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=server.url, timeout=10)
        case.validate_response(response, checks=CHECKS)
        assert "Traceback" not in response.text and 'File "' not in response.text
        assert "sk-provider-secret" not in response.text

    check()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
