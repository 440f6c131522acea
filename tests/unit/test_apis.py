"""The client APIs: what each parses into (the turns routers see), what each refuses and how,
and which exchange serves it from each kind of provider."""

from __future__ import annotations

import orjson
import pytest

from gateway.apis import CHAT, MESSAGES, ClientApi
from gateway.apis.base import AUTO_MODELS
from gateway.config import ModelProvider
from gateway.errors import BadGateway, BadRequest
from gateway.routing import Turn


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


def test_a_role_this_gateway_does_not_know_passes_to_the_provider() -> None:
    messages = [{"role": "wizard", "content": "x"}, {"role": "user", "content": "y"}]
    request = CHAT.parse(body(messages=messages), 10)
    assert request.turns == [Turn("user", "y")]  # routers read only the roles they know


def test_chat_turns_keep_roles_and_text() -> None:
    request = CHAT.parse(body(model="openai/gpt-4o", stream=True, stream_options={"include_usage": True},
                              messages=[{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                     {"type": "text", "text": "b"}]},
                                        {"role": "function", "content": "result"}]), 10)
    assert request.requested_model == "openai/gpt-4o"
    assert request.stream and request.include_usage
    assert request.turns == [Turn("system", "be brief"), Turn("user", "a\nb"), Turn("tool", "result")]


def test_messages_turns_split_tool_results_from_user_text() -> None:
    request = MESSAGES.parse(body(system=[{"type": "text", "text": "sys"}], messages=[
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]},
            {"type": "text", "text": "and now?"}]}]), 10)
    assert request.turns == [Turn("system", "sys"), Turn("tool", "42"), Turn("user", "and now?")]
    assert request.include_usage  # Anthropic streams always carry usage


@pytest.mark.parametrize("model", sorted(AUTO_MODELS))
def test_auto_model_names_leave_the_choice_to_the_gateway(model: str) -> None:
    request = CHAT.parse(body(model=model, messages=[{"role": "user", "content": "x"}]), 10)
    assert request.requested_model is None


@pytest.mark.parametrize(
    ("api", "raw", "param", "code"),
    [
        (CHAT, b"{", None, "invalid_json"),
        (CHAT, b"[]", None, "invalid_json"),
        (CHAT, body(), "messages", "missing_required_parameter"),
        (CHAT, body(messages=[]), "messages", "invalid_type"),
        (CHAT, body(messages=[{"role": "user"}] * 3), "messages", "too_many_messages"),
        (CHAT, body(model=7, messages=[{"role": "user"}]), "model", "invalid_type"),
        (CHAT, body(stream="yes", messages=[{"role": "user"}]), "stream", "invalid_type"),
        (CHAT, body(messages=[{"role": 5}]), "messages[0].role", "invalid_value"),
        (MESSAGES, body(messages=["text"]), "messages[0].role", "invalid_value"),
    ],
)
def test_bad_requests_name_the_field(api: ClientApi, raw: bytes, param: str | None, code: str) -> None:
    with pytest.raises(BadRequest) as caught:
        api.parse(raw, 2)
    assert (caught.value.param, caught.value.code) == (param, code)


def test_each_api_renders_errors_in_its_own_envelope() -> None:
    error = BadGateway("upstream down", code="upstream_error")
    assert orjson.loads(CHAT.error_body(error))["error"]["message"] == "upstream down"
    assert orjson.loads(MESSAGES.error_body(error)) == {
        "type": "error", "error": {"type": "api_error", "message": "upstream down"}}
    assert CHAT.stream_error(error).startswith(b"data: {\"error\"")
    assert MESSAGES.stream_error(error).startswith(b"event: error\ndata: ")


@pytest.mark.parametrize(
    ("api", "interface", "path", "translated"),
    [(CHAT, "openai", "/chat/completions", False), (CHAT, "anthropic", "/messages", True),
     (MESSAGES, "anthropic", "/messages", False), (MESSAGES, "openai", "/chat/completions", True)],
)
def test_same_api_passes_through_and_the_other_translates(
    api: ClientApi, interface: str, path: str, translated: bool
) -> None:
    exchange = api.exchange(ModelProvider("p/m", "p", "m", interface, "http://x/v1"))  # type: ignore[arg-type]
    assert exchange.path == path
    assert (exchange.response_body is not None) == translated


def test_a_passed_through_stream_cut_short_ends_with_the_apis_error_event() -> None:
    request = CHAT.parse(body(messages=[{"role": "user", "content": "x"}]), 10)
    chat = CHAT.exchanges["openai"].stream(request, "m", 1024)
    assert chat.feed(b"data: {}\n\n") == b"data: {}\n\n"
    assert b"upstream_stream_incomplete" in chat.close()
    messages = MESSAGES.exchanges["anthropic"].stream(request, "m", 1024)
    messages.feed(b"event: message_start\ndata: {}\n\n")
    assert messages.close().startswith(b"event: error\n")
    whole = CHAT.exchanges["openai"].stream(request, "m", 1024)
    whole.feed(b"data: {}\n\ndata: [DONE]\n\n")
    assert whole.close() == b""
