"""The OpenAI Responses wire format, as the simulator speaks it (native `/v1/responses`).

The simulated model is the chat one (`agent.reply`): a Responses request is read as the chat
conversation it amounts to. Like OpenAI, the simulator keeps the responses it made (a bounded
number, per simulator instance), so `previous_response_id` continues a conversation here too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

import orjson

from gateway.errors import BadRequest as GatewayBadRequest
from gateway.providers.responses import (
    call_item,
    input_items,
    message_item,
    response_object,
    responses_usage,
    to_chat_request,
)
from gateway.providers.responses_stream import ResponseEvents
from gateway.providers.responses_tools import Shapes, call_shapes
from gateway.simulator import openai
from gateway.simulator.agent import BadRequest, Conversation, JsonObject, Reply
from gateway.simulator.wire import Api, StreamEvents, require_object, require_str

KEEP = 1000


class ResponsesApi:
    """Parse, render and stream Responses, remembering each response's conversation."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, list[JsonObject]] = OrderedDict()  # response id -> items

    def api(self) -> Api:
        return Api(parse=self.parse, render=self.render, stream=self.stream, error=openai.error)

    def parse(self, raw: Any, digest: str) -> Conversation:
        body = require_object(raw)
        model = require_str(body, "model")
        if not isinstance(body.get("input"), str | list):
            raise BadRequest("input: a string or an array is required", "input")
        items = input_items(body)
        previous = body.get("previous_response_id")
        if previous is not None:
            if previous not in self._kept:
                raise BadRequest(f"previous response {previous!r} not found", "previous_response_id")
            items = self._kept[previous] + items
        try:
            # OpenAI runs hosted tools itself (Codex offers web_search on every request): the
            # simulated model accepts them and never calls them.
            chat = to_chat_request({**body, "stream": False}, items, model, drops=[])
        except GatewayBadRequest as exc:
            raise BadRequest(exc.message, exc.param) from None
        conversation = openai.parse(chat, digest)
        # The request travels with its conversation: two identical requests at once each keep
        # their own (a table keyed by the body's digest would hand the second one nothing).
        return replace(conversation, stream=body.get("stream") is True, prompt=chat,
                       request=(items, body))

    def _keep(self, conversation: Conversation, response_id: str, output: list[JsonObject]) -> None:
        items, body = conversation.request
        if body.get("store") is not False:
            self._kept[response_id] = items + output
            while len(self._kept) > KEEP:
                self._kept.popitem(last=False)

    def delete(self, response_id: str) -> bool:
        """DELETE /v1/responses/{id}: forgets a response it kept; False for one it never had."""
        return self._kept.pop(response_id, None) is not None

    def render(self, conversation: Conversation, reply: Reply, created: int) -> bytes:
        response_id = f"resp_{conversation.digest}"
        items, body = conversation.request
        output = _output(conversation, reply, call_shapes(body, items))
        self._keep(conversation, response_id, output)
        status = "incomplete" if reply.truncated else "completed"
        incomplete = {"reason": "max_output_tokens"} if reply.truncated else None
        return orjson.dumps(response_object(
            body, response_id, conversation.model, output, status,
            usage=_usage(conversation, reply), incomplete=incomplete, created_at=created,
        ))

    def stream(self, conversation: Conversation, reply: Reply, created: int) -> StreamEvents:
        response_id = f"resp_{conversation.digest}"
        items, body = conversation.request
        events = ResponseEvents(body, response_id, conversation.model, items)
        events.start()
        out: StreamEvents = [(0, events.drain())]
        call = reply.tool_call
        if call is not None:
            events.call("call", f"call_{conversation.digest}", call.name)
        for i, token in enumerate(reply.tokens):
            if call is None:
                events.text(token)
            else:
                events.arguments("call", token)
            out.append((i, events.drain()))
        last = max(len(reply.tokens) - 1, 0)
        events.finish("length" if reply.truncated else "stop", _usage(conversation, reply))
        out.append((last, events.drain()))
        assert events.final is not None
        self._keep(conversation, response_id, events.final["output"])
        return out


def _output(conversation: Conversation, reply: Reply, shapes: Shapes) -> list[JsonObject]:
    call = reply.tool_call
    if call is None:
        return [message_item(reply.text, f"msg_{conversation.digest}")]
    return [call_item(f"call_{conversation.digest}", call.name, call.arguments_json, shapes,
                      f"fc_{conversation.digest}")]


def _usage(conversation: Conversation, reply: Reply) -> JsonObject:
    return responses_usage(conversation.prompt_tokens, len(reply.tokens), conversation.cached_tokens)
