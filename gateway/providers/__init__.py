"""API shapes: how a request in the client's API becomes one in the provider's, and back.

An `Exchange` is chosen per (client API, provider interface) pair; same-API pairs pass bytes
through, the others translate (Anthropic Messages <-> OpenAI Chat Completions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import orjson

from gateway.config import ModelProvider
from gateway.errors import BadGateway
from gateway.providers import openai
from gateway.providers.anthropic import (
    chat_to_messages_request,
    chat_to_messages_response,
    messages_to_chat_request,
    messages_to_chat_response,
)
from gateway.providers.anthropic_errors import anthropic_error_body
from gateway.providers.anthropic_stream import ChatToMessagesStream, MessagesToChatStream
from gateway.sse import encode_event

ClientApi = Literal["openai", "anthropic"]


class StreamTranslator(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    @property
    def usage(self) -> dict[str, int] | None: ...


@dataclass(frozen=True, slots=True)
class Exchange:
    path: str  # appended to the provider's api_base
    headers: Callable[[ModelProvider], dict[str, str]]
    request_body: Callable[[dict[str, Any], bytes, str], bytes]  # (payload, raw, model_id)
    response_body: Callable[[bytes, str], bytes] | None  # None: pass the provider's bytes through
    stream: Callable[[str, bool], StreamTranslator]  # (model, include_usage)


ANTHROPIC_VERSION = "2023-06-01"


CUT_SHORT = "the upstream ended the stream before it was complete"


def _openai_passthrough(model: str, include_usage: bool) -> StreamTranslator:
    error = BadGateway(CUT_SHORT, reason="reset", code="upstream_stream_incomplete")
    return openai.UsageScanner(b"data: [DONE]", encode_event(error.body()))


def _anthropic_passthrough(model: str, include_usage: bool) -> StreamTranslator:
    error = orjson.dumps(anthropic_error_body(502, CUT_SHORT))
    return openai.UsageScanner(b"event: message_stop", encode_event(error, event="error"))


def anthropic_headers(provider: ModelProvider) -> dict[str, str]:
    headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
    if provider.access_key:
        headers["x-api-key"] = provider.access_key
    return headers


def _chat_to_messages(payload: dict[str, Any], raw: bytes, model_id: str) -> bytes:
    return orjson.dumps(chat_to_messages_request(payload, model_id))


def _messages_to_chat(payload: dict[str, Any], raw: bytes, model_id: str) -> bytes:
    return orjson.dumps(messages_to_chat_request(payload, model_id))


def _messages_response_to_chat(body: bytes, model: str) -> bytes:
    return orjson.dumps(messages_to_chat_response(orjson.loads(body), model))


def _chat_response_to_messages(body: bytes, model: str) -> bytes:
    return orjson.dumps(chat_to_messages_response(orjson.loads(body), model))


EXCHANGES: dict[tuple[ClientApi, str], Exchange] = {
    ("openai", "openai"): Exchange(
        path="/chat/completions",
        headers=openai.request_headers,
        request_body=openai.chat_request_body,
        response_body=None,
        stream=_openai_passthrough,
    ),
    ("anthropic", "anthropic"): Exchange(
        path="/messages",
        headers=anthropic_headers,
        request_body=openai.chat_request_body,  # same rule: swap the model id, else forward bytes
        response_body=None,
        stream=_anthropic_passthrough,
    ),
    ("openai", "anthropic"): Exchange(
        path="/messages",
        headers=anthropic_headers,
        request_body=_chat_to_messages,
        response_body=_messages_response_to_chat,
        stream=MessagesToChatStream,
    ),
    ("anthropic", "openai"): Exchange(
        path="/chat/completions",
        headers=openai.request_headers,
        request_body=_messages_to_chat,
        response_body=_chat_response_to_messages,
        stream=lambda model, include_usage: ChatToMessagesStream(model),
    ),
}


def exchange_for(client_api: ClientApi, interface: str, max_event_size: int | None = None) -> Exchange:
    """The exchange for a pair; with `max_event_size`, a translated stream's SSE lines and events
    are capped at it (pass-through streams are relayed as bytes and never held whole)."""
    exchange = EXCHANGES[(client_api, interface)]
    limited = LIMITED_STREAMS.get((client_api, interface))
    if max_event_size is None or limited is None:
        return exchange
    limit = max_event_size
    return replace(exchange, stream=lambda model, include_usage: limited(model, include_usage, limit))


LIMITED_STREAMS: dict[tuple[ClientApi, str], Callable[[str, bool, int], StreamTranslator]] = {
    ("openai", "anthropic"): lambda model, include_usage, limit: MessagesToChatStream(
        model, include_usage, max_event_size=limit),
    ("anthropic", "openai"): lambda model, include_usage, limit: ChatToMessagesStream(
        model, max_event_size=limit),
}
