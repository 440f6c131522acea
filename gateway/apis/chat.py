"""OpenAI Chat Completions (`POST /v1/chat/completions`) as a client API."""

from __future__ import annotations

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
from gateway.errors import BadGateway, GatewayError
from gateway.providers import anthropic, anthropic_wire, openai
from gateway.providers.anthropic_stream import MessagesToChatStream
from gateway.routing import Turn
from gateway.sse import encode_event
from gateway.usage import UsageScanner

# Roles routers read; others pass through to the provider untouched.
TURN_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
              "tool": "tool", "function": "tool"}
CUT_SHORT = "the upstream ended the stream before it was complete"


def parse(raw: bytes, max_messages: int) -> ClientRequest:
    payload = load_json(raw)
    messages = messages_of(payload, max_messages)
    requested, stream = requested_model(payload), stream_flag(payload)
    turns = []
    for index, message in enumerate(messages):
        role = TURN_ROLES.get(role_of(message, index))
        if role is not None:
            turns.append(Turn(role, text_of(message.get("content"))))
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ClientRequest(raw, payload, requested, stream, include_usage, turns)


def error_body(error: GatewayError) -> bytes:
    return error.body()


def stream_error(error: GatewayError) -> bytes:
    """OpenAI streams carry an error as one last chunk holding the error envelope."""
    return encode_event(error.body())


# The last event of a pass-through stream the upstream cut short: built once, not per stream.
_CUT_SHORT_EVENT = stream_error(BadGateway(CUT_SHORT, reason="reset", code="upstream_stream_incomplete"))


def _passthrough_stream(request: ClientRequest, model: str, limit: int) -> StreamTranslator:
    return UsageScanner(b"data: [DONE]", _CUT_SHORT_EVENT)


def _to_messages(request: ClientRequest, provider: ModelProvider, drops: list[str]) -> bytes:
    messages = anthropic.chat_to_messages_request(request.payload, provider.model_id, drops=drops)
    return orjson.dumps(messages)


def _from_messages(request: ClientRequest, body: bytes, model: str) -> bytes:
    return orjson.dumps(anthropic.messages_to_chat_response(orjson.loads(body), model))


CHAT = ClientApi(
    name="chat",
    endpoint="chat_completions",
    parse=parse,
    error_body=error_body,
    stream_error=stream_error,
    exchanges={
        "openai": Exchange(
            path="/chat/completions",
            headers=openai.request_headers,
            request_body=passthrough_body,
            response_body=None,
            stream=_passthrough_stream,
        ),
        "anthropic": Exchange(
            path="/messages",
            headers=anthropic_wire.request_headers,
            request_body=_to_messages,
            response_body=_from_messages,
            stream=lambda request, model, limit: MessagesToChatStream(
                model, request.include_usage, max_event_size=limit),
        ),
    },
)
