"""What every client API is: a parser for its requests, the look of its errors, and the
exchange (path, headers, translators) that serves it from each kind of provider."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from gateway.config import ModelProvider
from gateway.errors import BadRequest, GatewayError
from gateway.providers import openai
from gateway.routing import Turn

# Model names that mean "let the gateway choose".
AUTO_MODELS = frozenset({"", "auto", "router"})


class Continued(NamedTuple):
    model: str  # the model that produced what the request continues
    route: str | None  # the route it was served under
    chain: str  # the id of the chain's first response: one conversation in logs and decisions


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A validated request in its client's API: the bytes as sent, the parsed body, and what
    routing needs (the requested model, and the conversation as turns of text)."""

    raw: bytes
    payload: dict[str, Any]
    requested_model: str | None
    stream: bool
    include_usage: bool
    turns: list[Turn]
    # What an API's `load` step found for this request (a Responses follow-up: the stored
    # conversation it continues); opaque to everything but that API's exchanges.
    context: Any = None
    # Where the request must go because of what it continues (a Responses follow-up goes back
    # to the model that produced the response it continues).
    continues: Continued | None = None


class StreamTranslator(Protocol):
    """Fed the upstream body as it arrives; returns what the client is sent now."""

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    @property
    def usage(self) -> dict[str, int] | None: ...


@dataclass(frozen=True, slots=True)
class Exchange:
    """How one client API is served by one kind of provider."""

    path: str  # appended to the provider's api_base
    headers: Callable[[ModelProvider], dict[str, str]]
    # (request, provider, drops): a translation names in `drops` what it had to leave out
    request_body: Callable[[ClientRequest, ModelProvider, list[str]], bytes]
    # (request, body, model); None: pass the provider's bytes through
    response_body: Callable[[ClientRequest, bytes, str], bytes] | None
    # (request, model, max_event_bytes): a translator that decodes the upstream's events holds
    # none longer than `max_event_bytes` (`upstream.max_sse_event_bytes`)
    stream: Callable[[ClientRequest, str, int], StreamTranslator]


# What a response translator raises on a provider's answer it cannot read (orjson's errors are
# ValueErrors): the pipeline answers 502, the provider being at fault, never 500.
UNREADABLE_ANSWER = (ValueError, TypeError, KeyError, AttributeError, IndexError)


# (request, tenant) -> the request with what it continues (`context`, `continues`) filled in
Load = Callable[[ClientRequest, str], Awaitable[ClientRequest]]
# (request, tenant, provider that served, the route it served under, the whole response in the
# client's API: parsed, or its bytes, parsed only if it is to be kept)
Save = Callable[[ClientRequest, str, ModelProvider, str | None, dict[str, Any] | bytes], Awaitable[None]]


def by_interface(provider: ModelProvider) -> str:
    return provider.interface


@dataclass(frozen=True, slots=True)
class ClientApi:
    name: str
    endpoint: str  # the metrics and log label of its endpoint
    parse: Callable[[bytes, int], ClientRequest]  # (body, max_messages)
    error_body: Callable[[GatewayError], bytes]  # the error envelope of a whole response
    stream_error: Callable[[GatewayError], bytes]  # the final event of a stream that failed
    exchanges: Mapping[str, Exchange]
    # Which exchange serves a provider: by its interface, unless an API knows better.
    kind: Callable[[ModelProvider], str] = by_interface
    load: Load | None = None  # state the request continues, read before it is planned
    save: Save | None = None  # state kept once a response is complete
    # Token counting: planned without pinning, served by the planned model alone, and
    # estimated by this when that model's provider kind has no exchange.
    estimate: Callable[[ClientRequest], int] | None = None

    def exchange(self, provider: ModelProvider) -> Exchange:
        return self.exchanges[self.kind(provider)]


def passthrough_body(request: ClientRequest, provider: ModelProvider, drops: list[str]) -> bytes:
    """A same-API request: the client's own bytes, the model id swapped in only if it differs."""
    return openai.chat_request_body(request.payload, request.raw, provider.model_id)


def load_json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return payload


def requested_model(payload: dict[str, Any]) -> str | None:
    """The model the client asked for; None when it leaves the choice to the gateway."""
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string", param="model", code="invalid_type")
    return None if model is None or model in AUTO_MODELS else model


def stream_flag(payload: dict[str, Any]) -> bool:
    stream = payload.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream", code="invalid_type")
    return stream


def messages_of(payload: dict[str, Any], max_messages: int) -> list[Any]:
    """The `messages` array both chat APIs carry, checked for presence and size."""
    messages = payload.get("messages")
    if messages is None:
        raise BadRequest("'messages' is required", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages", code="invalid_type")
    if len(messages) > max_messages:
        raise BadRequest(
            f"'messages' has {len(messages)} entries; the limit is {max_messages}",
            param="messages", code="too_many_messages",
        )
    return messages


def role_of(message: Any, index: int) -> str:
    """A message's role. Any role string passes (newer clients send roles this gateway does
    not know, and the provider decides); a message that is not an object with one is a 400."""
    role = message.get("role") if isinstance(message, dict) else None
    if not isinstance(role, str):
        raise BadRequest(
            f"messages[{index}] must be an object with a string role",
            param=f"messages[{index}].role", code="invalid_value",
        )
    return role
