"""The OpenAI Responses API (`POST /v1/responses`) as a client API.

Three exchanges: an OpenAI-kind provider with `responses: native` gets the request on its own
`/responses`; other OpenAI-compatible ones get it translated to Chat Completions; Anthropic
providers get it translated to Messages. Built per app (`responses_api(store, ...)`), because
its `load` and `save` steps use the response store: a follow-up (`previous_response_id`) is
given the stored conversation it continues and is sent back to the model that produced it;
a finished response with `store` not false is kept for the next one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from gateway.affinity.responses import ResponseStore
from gateway.apis.base import (
    ClientApi,
    ClientRequest,
    Continued,
    Exchange,
    load_json,
    requested_model,
    stream_flag,
)
from gateway.apis.responses_parse import validate
from gateway.config import ModelProvider
from gateway.content import text_of
from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.providers import anthropic_wire, openai
from gateway.providers.responses import from_chat_response, input_items, item_kind, new_id, to_chat_request
from gateway.providers.responses_anthropic import from_message, to_messages_request
from gateway.providers.responses_stream import (
    ChatToResponsesStream,
    MessagesToResponsesStream,
    NativeResponsesStream,
)
from gateway.routing import Turn
from gateway.sse import encode_event

logger = logging.getLogger("gateway.responses")
STORED = ("completed", "incomplete")


@dataclass(slots=True)
class Conversation:
    """A request's whole input: the stored chain it continues (`history`) and its own items."""

    items: list[dict[str, Any]]
    history: list[dict[str, Any]] = field(default_factory=list)
    previous: dict[str, Any] | None = None  # the stored record it continues

    @property
    def full(self) -> list[dict[str, Any]]:
        return self.history + self.items if self.history else self.items


def parse(raw: bytes, max_items: int) -> ClientRequest:
    payload = load_json(raw)
    validate(payload, max_items)
    requested, stream = requested_model(payload), stream_flag(payload)
    items = input_items(payload)
    return ClientRequest(raw, payload, requested, stream, True, turns_of(payload, items), Conversation(items))


def turns_of(payload: dict[str, Any], items: list[dict[str, Any]]) -> list[Turn]:
    turns = []
    if isinstance(payload.get("instructions"), str):
        turns.append(Turn("system", payload["instructions"]))
    for item in items:
        kind = item_kind(item)
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            turns.append(Turn(role, text_of(item.get("content"))))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            turns.append(Turn("tool", output if isinstance(output, str) else text_of(output)))
    return turns


def error_body(error: GatewayError) -> bytes:
    return error.body()  # the Responses API answers errors in the OpenAI envelope


def stream_error(error: GatewayError) -> bytes:
    body = {"type": "error", "code": error.code, "message": error.message, "param": error.param,
            "sequence_number": 0}
    return encode_event(orjson.dumps(body), event="error")


def conversation(request: ClientRequest) -> Conversation:
    context = request.context
    assert isinstance(context, Conversation)
    return context


# --- the exchanges -------------------------------------------------------------------------------


def _to_chat(request: ClientRequest, provider: ModelProvider, drops: list[str]) -> bytes:
    chat = to_chat_request(request.payload, conversation(request).full, provider.model_id, drops,
                           max_tokens_field=openai.max_tokens_field(provider))
    return orjson.dumps(chat)


def _from_chat(request: ClientRequest, body: bytes, model: str) -> bytes:
    answer = orjson.loads(body)
    return orjson.dumps(from_chat_response(
        request.payload, answer, model, new_id("resp"), conversation(request).full))


def _to_messages(request: ClientRequest, provider: ModelProvider, drops: list[str]) -> bytes:
    messages = to_messages_request(request.payload, conversation(request).full, provider.model_id, drops)
    return orjson.dumps(messages)


def _from_messages(request: ClientRequest, body: bytes, model: str) -> bytes:
    answer = orjson.loads(body)
    return orjson.dumps(from_message(
        request.payload, answer, model, new_id("resp"), conversation(request).full))


def _native(request: ClientRequest, provider: ModelProvider, drops: list[str]) -> bytes:
    """The client's request as it is, unless it continues a response this provider does not
    hold (one served by translation): then with the stored conversation spelled out."""
    context = conversation(request)
    previous = context.previous
    if previous is None or previous.get("native"):
        return openai.chat_request_body(request.payload, request.raw, provider.model_id)
    payload = {k: v for k, v in request.payload.items() if k != "previous_response_id"}
    payload["input"] = [_as_input(item) for item in context.full]
    payload["model"] = provider.model_id
    return orjson.dumps(payload)


def _as_input(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item as input to a provider: without the ids the gateway made up for it."""
    return {k: v for k, v in item.items() if k not in ("id", "status")}


def _kind(provider: ModelProvider) -> str:
    if provider.interface == "openai" and provider.responses == "native":
        return "native"
    return provider.interface


EXCHANGES = {
    "native": Exchange(
        path="/responses",
        headers=openai.request_headers,
        request_body=_native,
        response_body=None,
        stream=lambda request, model, limit: NativeResponsesStream(limit),
    ),
    "openai": Exchange(
        path="/chat/completions",
        headers=openai.request_headers,
        request_body=_to_chat,
        response_body=_from_chat,
        stream=lambda request, model, limit: ChatToResponsesStream(
            request.payload, model, max_event_size=limit, items=conversation(request).full),
    ),
    "anthropic": Exchange(
        path="/messages",
        headers=anthropic_wire.request_headers,
        request_body=_to_messages,
        response_body=_from_messages,
        stream=lambda request, model, limit: MessagesToResponsesStream(
            request.payload, model, max_event_size=limit, items=conversation(request).full),
    ),
}


# --- state ---------------------------------------------------------------------------------------


class ResponseState:
    """The `load` and `save` steps over one response store."""

    def __init__(self, store: ResponseStore, max_items: int) -> None:
        self.store = store
        self.max_items = max_items

    async def load(self, request: ClientRequest, tenant: str) -> ClientRequest:
        previous_id = request.payload.get("previous_response_id")
        if previous_id is None:
            return request
        record = await self.store.get(tenant, previous_id)
        if record is None:
            raise NotFound(
                f"previous response {previous_id!r} was not found (unknown, expired or deleted)",
                param="previous_response_id", code="previous_response_not_found",
            )
        history = record["input"] + record["response"]["output"]
        context = Conversation(conversation(request).items, history, record)
        if len(context.full) > self.max_items:
            raise BadRequest(
                f"the conversation has {len(context.full)} items with the stored ones; the limit is "
                f"{self.max_items}", param="previous_response_id", code="too_many_items",
            )
        chain = record.get("chain") or previous_id  # kept before chains were: it begins there
        continues = Continued(record["model"], record.get("route"), chain)
        return replace(request, context=context, continues=continues)

    async def save(
        self, request: ClientRequest, tenant: str, provider: ModelProvider, route: str | None,
        answer: dict[str, Any] | bytes,
    ) -> None:
        if request.payload.get("store") is False:
            return  # before parsing: Codex sends store false on every request
        response = answer if isinstance(answer, dict) else _parsed(answer)
        if response is None or response.get("status") not in STORED:
            return
        response_id = response.get("id")
        if not isinstance(response_id, str):
            return
        items = [_with_id(item) for item in conversation(request).full]
        chain = request.continues.chain if request.continues is not None else response_id
        record = {"response": response, "input": items, "model": provider.model, "route": route,
                  "chain": chain, "native": _kind(provider) == "native"}
        try:
            await self.store.put(tenant, response_id, record)
        except Exception:  # the response was served; only its follow-ups will miss it
            logger.warning("storing response %s failed", response_id[:16], exc_info=True)


def _parsed(body: bytes) -> dict[str, Any] | None:
    try:
        response = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # a native provider's odd answer: passed on, not kept
    return response if isinstance(response, dict) else None


ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs",
               "custom_tool_call": "ctc", "custom_tool_call_output": "ctco", "additional_tools": "at"}


def _with_id(item: dict[str, Any]) -> dict[str, Any]:
    """Stored items carry an id and a status, and a message its text as parts, as input_items
    lists them (the SDK's `ResponseItem`)."""
    if isinstance(item.get("id"), str) and ("status" in item or item.get("type") == "reasoning"):
        return item
    kind = item_kind(item)
    extra: dict[str, Any] = {} if kind == "reasoning" else {"status": "completed"}
    stored = {"id": new_id(ID_PREFIXES.get(kind, "item")), "type": kind, **extra, **item}
    if kind == "message" and isinstance(item.get("content"), str):
        text = item["content"]
        stored["content"] = [{"type": "output_text", "text": text, "annotations": []}
                             if item.get("role") == "assistant" else {"type": "input_text", "text": text}]
    return stored


def responses_api(store: ResponseStore, max_items: int) -> ClientApi:
    state = ResponseState(store, max_items)
    return ClientApi(
        name="responses",
        endpoint="responses",
        parse=parse,
        error_body=error_body,
        stream_error=stream_error,
        exchanges=EXCHANGES,
        kind=_kind,
        load=state.load,
        save=state.save,
    )
