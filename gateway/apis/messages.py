"""Anthropic Messages (`POST /v1/messages`) as a client API."""

from __future__ import annotations

from dataclasses import replace

import orjson

from gateway.apis.base import (
    ClientApi,
    ClientRequest,
    Exchange,
    StreamTranslator,
    load_json,
    messages_of,
    passthrough_body,
    requested_model,
    role_of,
    stream_flag,
)
from gateway.config import ModelProvider
from gateway.content import text_of
from gateway.errors import GatewayError
from gateway.providers import anthropic, anthropic_wire, openai
from gateway.providers.anthropic_stream import ChatToMessagesStream
from gateway.routing import Turn
from gateway.sse import encode_event
from gateway.usage import UsageScanner

CUT_SHORT = "the upstream ended the stream before it was complete"


def parse(raw: bytes, max_messages: int) -> ClientRequest:
    """`tool_result` blocks count as tool turns, so routers see what the tools answered."""
    payload = load_json(raw)
    messages = messages_of(payload, max_messages)
    requested, stream = requested_model(payload), stream_flag(payload)
    turns = []
    if payload.get("system"):
        turns.append(Turn("system", text_of(payload["system"])))
    for index, message in enumerate(messages):
        role = role_of(message, index)  # any role passes: newer clients send `system` here too
        content = message.get("content")
        if role == "user" and isinstance(content, list):
            results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            for block in results:
                turns.append(Turn("tool", text_of(block.get("content"))))
            rest = [b for b in content if b not in results]
            if rest or not results:
                turns.append(Turn("user", text_of(rest)))
            continue
        if role in ("user", "assistant", "system"):
            turns.append(Turn(role, text_of(content)))
    return ClientRequest(raw, payload, requested, stream, True, turns)


def error_body(error: GatewayError) -> bytes:
    return orjson.dumps(anthropic_wire.anthropic_error_body(error.status, error.message))


def stream_error(error: GatewayError) -> bytes:
    return encode_event(error_body(error), event="error")


# The last event of a pass-through stream the upstream cut short: built once, not per stream.
_CUT_SHORT_EVENT = encode_event(
    orjson.dumps(anthropic_wire.anthropic_error_body(502, CUT_SHORT)), event="error")


def _passthrough_stream(request: ClientRequest, model: str, limit: int) -> StreamTranslator:
    return UsageScanner(b"event: message_stop", _CUT_SHORT_EVENT)


def _to_chat(request: ClientRequest, provider: ModelProvider, drops: list[str]) -> bytes:
    chat = anthropic.messages_to_chat_request(
        request.payload, provider.model_id, max_tokens_field=openai.max_tokens_field(provider), drops=drops)
    return orjson.dumps(chat)


def _from_chat(request: ClientRequest, body: bytes, model: str) -> bytes:
    return orjson.dumps(anthropic.chat_to_messages_response(orjson.loads(body), model))


def estimate_tokens(request: ClientRequest) -> int:
    """The documented estimate for providers that cannot count Anthropic requests: a quarter
    of the characters of the JSON of `system`, `messages` and `tools` (x-gateway-token-estimate)."""
    payload = request.payload
    counted = [payload.get("system"), payload.get("messages"), payload.get("tools")]
    return -(-len(orjson.dumps(counted)) // 4)


COUNT_TOKENS_EXCHANGE = Exchange(
    path="/messages/count_tokens",
    headers=anthropic_wire.request_headers,
    request_body=passthrough_body,
    response_body=None,
    stream=_passthrough_stream,
)

MESSAGES = ClientApi(
    name="messages",
    endpoint="messages",
    parse=parse,
    error_body=error_body,
    stream_error=stream_error,
    exchanges={
        "anthropic": Exchange(
            path="/messages",
            headers=anthropic_wire.request_headers,
            # The same rule as OpenAI's: swap in the model id, else forward the client's bytes.
            request_body=passthrough_body,
            response_body=None,
            stream=_passthrough_stream,
        ),
        "openai": Exchange(
            path="/chat/completions",
            headers=openai.request_headers,
            request_body=_to_chat,
            response_body=_from_chat,
            stream=lambda request, model, limit: ChatToMessagesStream(model, max_event_size=limit),
        ),
    },
)


def parse_count(raw: bytes, max_messages: int) -> ClientRequest:
    """A count_tokens request is answered as one JSON object whatever its `stream` says (the
    provider judges the field; the gateway must not wait for a stream that never comes)."""
    return replace(parse(raw, max_messages), stream=False)


COUNT_TOKENS = ClientApi(
    name="count_tokens",
    endpoint="count_tokens",
    parse=parse_count,
    error_body=error_body,
    stream_error=stream_error,
    exchanges={"anthropic": COUNT_TOKENS_EXCHANGE},
    estimate=estimate_tokens,
)
