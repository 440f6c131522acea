"""Translation between the OpenAI Responses API and Anthropic Messages: the request sent
to an Anthropic model on its own Messages API, and its message as a Responses `response`.

The request is built through the Chat Completions shape in memory (`responses.to_chat_request`
then `anthropic.chat_to_messages_request`): that path already maps images, tool calls and
results, alternation and system prompts as Anthropic wants them; the wire to Anthropic is its
Messages API either way. Responses features with no Messages equivalent (`text.format`, reasoning
effort) are dropped there, as the chat translation drops them.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest
from gateway.providers import anthropic
from gateway.providers.anthropic_wire import TranslationError, finish_reason, tool_call_of
from gateway.providers.responses import (
    call_item,
    message_item,
    new_id,
    response_object,
    responses_usage,
    status_of_finish,
    to_chat_request,
)
from gateway.providers.responses_tools import call_shapes
from gateway.usage import counts_of


def to_messages_request(
    payload: dict[str, Any], items: list[dict[str, Any]], model_id: str, drops: list[str] | None = None
) -> dict[str, Any]:
    chat = to_chat_request(payload, items, model_id, drops)
    chat.pop("stream_options", None)
    chat.pop("response_format", None)
    chat.pop("reasoning_effort", None)  # parallel_tool_calls stays: the chat translation maps it
    try:
        messages = anthropic.chat_to_messages_request(chat, model_id, drops=drops)
    except BadRequest as error:
        # It names a field of the chat request built here in memory; the client sent Responses.
        field = _client_field(error.param)
        where = f" (in `{field}`, as translated for an Anthropic model)" if field else ""
        raise TranslationError(error.message + where, param=field, code=error.code) from None
    return messages


def from_message(
    request: dict[str, Any], message: dict[str, Any], model: str, response_id: str,
    items: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`items` as for `responses.from_chat_response`."""
    output: list[dict[str, Any]] = []
    texts: list[str] = []
    shapes = call_shapes(request, items)
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = tool_call_of(block)["function"]["arguments"]
            call_id = block.get("id") or new_id("call")
            output.append(call_item(call_id, block.get("name", ""), arguments, shapes))
    if texts:
        output.insert(0, message_item("".join(texts)))
    given = message.get("usage")
    usage = counts_of(given if isinstance(given, dict) else {})
    stop = message.get("stop_reason")
    status, incomplete = status_of_finish(finish_reason(stop if isinstance(stop, str) else None))
    return response_object(
        request, response_id, model, output, status,
        usage=responses_usage(
            usage["prompt_tokens"], usage["completion_tokens"], usage["cached_prompt_tokens"]),
        incomplete=incomplete,
    )


# Chat fields the Responses request's fields became (`to_chat_request`).
_CLIENT_FIELDS = {"messages": "input", "max_tokens": "max_output_tokens", "tools": "tools",
                  "tool_choice": "tool_choice"}


def _client_field(param: str | None) -> str | None:
    """The client's field a chat field came from: its top-level name (a chat message's index
    is not its input item's, so `messages[3]...` is named as `input`)."""
    if param is None:
        return None
    top = param.split("[", 1)[0].split(".", 1)[0]
    return _CLIENT_FIELDS.get(top, top)

