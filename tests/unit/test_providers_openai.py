"""OpenAI-compatible upstreams: the key goes in the headers, bodies pass through untouched."""

from __future__ import annotations

import orjson

from gateway.config import ModelProvider
from gateway.providers.openai import (
    StreamedCalls,
    chat_request_body,
    max_tokens_field,
    request_headers,
    within_output_cap,
)


def provider(key: str | None) -> ModelProvider:
    return ModelProvider("openai/gpt-4o", "openai", "gpt-4o", "openai", "https://x/v1", key)


def test_the_provider_key_is_a_bearer_token_and_only_when_there_is_one() -> None:
    assert request_headers(provider("sk-1")) == {"content-type": "application/json",
                                                 "authorization": "Bearer sk-1"}
    assert "authorization" not in request_headers(provider(None))


def test_the_clients_bytes_go_on_untouched_when_the_model_id_already_matches() -> None:
    raw = b'{"model":"gpt-4o", "messages":[], "x_unknown_field":{"kept":true}}'
    assert chat_request_body(orjson.loads(raw), raw, "gpt-4o") is raw


def test_only_the_model_changes_when_it_must() -> None:
    raw = b'{"model":"openai/gpt-4o","x_unknown_field":[1,2],"messages":[]}'
    sent = orjson.loads(chat_request_body(orjson.loads(raw), raw, "gpt-4o"))
    assert sent == {"model": "gpt-4o", "x_unknown_field": [1, 2], "messages": []}


def test_streamed_calls_are_numbered_however_the_server_indexes_them() -> None:
    openai_style = StreamedCalls()  # index and id once, then the arguments by index alone
    assert [openai_style.number(c) for c in (
        {"index": 0, "id": "a"}, {"index": 0}, {"index": 1, "id": "b"}, {"index": 1}, {"index": 0})] == [
        0, 0, 1, 1, 0]
    whole_at_zero = StreamedCalls()  # each call whole, all at index 0, each with its own id
    assert [whole_at_zero.number({"index": 0, "id": i}) for i in ("a", "b", "b", "c")] == [0, 1, 1, 2]
    no_index = StreamedCalls()  # no index: a new id is a new call, no id continues the last
    assert [no_index.number(c) for c in ({"id": "a"}, {}, {"id": "b"}, {}, {"id": "b"})] == [0, 0, 1, 1, 1]
    assert StreamedCalls().number({"index": True}) == 0  # a bool is not an index


def test_max_tokens_past_the_providers_cap_are_lowered_in_a_copy() -> None:
    payload = {"model": "gpt-4o", "max_completion_tokens": 9, "max_output_tokens": 3, "stream": True}
    assert within_output_cap(payload, 5) == {**payload, "max_completion_tokens": 5}
    assert payload["max_completion_tokens"] == 9  # the client's own is left as it was
    assert within_output_cap({"max_tokens": 100, "n": True}, 16384) is None  # nothing past it


def test_openai_itself_is_sent_max_completion_tokens_and_compatible_servers_max_tokens() -> None:
    assert max_tokens_field(provider("sk")) == "max_completion_tokens"  # o-series refuse max_tokens
    vllm = ModelProvider("vllm/m", "vllm", "m", "openai", "http://v/v1")
    assert max_tokens_field(vllm) == "max_tokens"
