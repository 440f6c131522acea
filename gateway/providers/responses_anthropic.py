"""Translation between the OpenAI Responses API and Anthropic Messages: the request sent
to an Anthropic model on its own Messages API, and its message as a Responses `response`.

The request is built through the Chat Completions shape in memory (`responses.to_chat_request`
then `anthropic.chat_to_messages_request`): that path already maps images, tool calls and
results, alternation and system prompts as Anthropic wants them; the wire to Anthropic is its
Messages API either way. A JSON schema `text.format` becomes Anthropic's structured output
(`output_config.format`); reasoning effort is dropped, as the chat translation drops it.
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
    stopped_in_last,
    to_chat_request,
)
from gateway.providers.responses_tools import call_shapes
from gateway.usage import counts_of, token_count


def to_messages_request(
    payload: dict[str, Any], items: list[dict[str, Any]], model_id: str, drops: list[str] | None = None
) -> dict[str, Any]:
    chat = to_chat_request(payload, items, model_id, drops)
    chat.pop("stream_options", None)
    chat.pop("reasoning_effort", None)  # parallel_tool_calls and response_format: mapped there
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
    shapes = call_shapes(request, items)
    for block in message.get("content") or ():  # in order, as the stream gives them
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            output.append(message_item(block["text"]))
        elif kind == "tool_use":
            arguments = tool_call_of(block)["function"]["arguments"]
            call_id = block.get("id") or new_id("call")
            output.append(call_item(call_id, block.get("name", ""), arguments, shapes))
    given = message.get("usage")
    raw = given if isinstance(given, dict) else {}
    usage = counts_of(raw)
    stop = message.get("stop_reason")
    status, incomplete = status_of_finish(finish_reason(stop if isinstance(stop, str) else None))
    return response_object(
        request, response_id, model, stopped_in_last(output, status), status,
        usage=responses_usage(
            usage["prompt_tokens"], usage["completion_tokens"], usage["cached_prompt_tokens"],
            written=token_count(raw.get("cache_creation_input_tokens"))),
        incomplete=incomplete,
    )


# Chat fields the Responses request's fields became (`to_chat_request`).
_CLIENT_FIELDS = {"messages": "input", "max_tokens": "max_output_tokens"}


def _client_field(param: str | None) -> str | None:
    """The client's field a chat field came from: its top-level name (a chat message's index
    is not its input item's, so `messages[3]...` is named as `input`)."""
    if param is None:
        return None
    top = param.split("[", 1)[0].split(".", 1)[0]
    return _CLIENT_FIELDS.get(top, top)

