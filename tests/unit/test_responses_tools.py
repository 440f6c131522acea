"""Codex CLI's tool shapes across translation: custom tools, namespaces, `additional_tools`
input items, custom tool calls and their outputs, out and back (plain and streamed)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.providers.responses import from_chat_response, input_items, to_chat_request
from gateway.providers.responses_anthropic import from_message, to_messages_request
from gateway.providers.responses_stream import ChatToResponsesStream
from gateway.sse import SSEDecoder
from tests.support import fixture_path

EVENTS = TypeAdapter(ResponseStreamEvent)
EXEC = {"type": "custom", "name": "exec", "description": "Run JavaScript.",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
SLEEP = {"type": "function", "name": "sleep", "parameters": {"type": "object", "properties": {}}}


def codex_request() -> dict[str, Any]:
    """Code mode: the tools in an input item, a namespace holding the custom tool, web_search."""
    return {"model": "m", "tools": [], "input": [
        {"type": "additional_tools", "role": "developer", "tools": [
            {"type": "namespace", "name": "functions", "tools": [EXEC]},
            {"type": "namespace", "name": "clock", "tools": [SLEEP]},
            {"type": "web_search", "external_web_access": False}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
        {"type": "custom_tool_call", "call_id": "c1", "name": "exec", "input": "text(1)",
         "status": "completed"},
        {"type": "custom_tool_call_output", "call_id": "c1",
         "output": [{"type": "input_text", "text": "Script completed"}, {"type": "input_text", "text": "1"}]},
    ]}


def test_custom_tools_namespaces_and_additional_tools_become_chat_functions() -> None:
    request = codex_request()
    drops: list[str] = []
    chat = to_chat_request(request, input_items(request), "m", drops)
    functions = {tool["function"]["name"]: tool["function"] for tool in chat["tools"]}
    assert set(functions) == {"exec", "sleep"}  # namespaces flattened, the hosted tool left out
    assert drops == ["tool"]
    twice = request | {"tools": [{"type": "namespace", "name": "other", "tools": [SLEEP]}]}
    again: list[str] = []
    assert len(to_chat_request(twice, input_items(twice), "m", again)["tools"]) == 2  # one sleep
    assert again == ["tool", "tool"]
    assert functions["exec"]["parameters"]["required"] == ["input"]
    assert "lark" in functions["exec"]["description"]
    roles = [message["role"] for message in chat["messages"]]
    assert roles == ["user", "assistant", "tool"]  # the tools item is no message
    assert json.loads(chat["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"input": "text(1)"}
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "Script completed\n1"}


def test_a_call_to_a_custom_tool_comes_back_as_a_custom_tool_call() -> None:
    request = codex_request()
    chat = {"choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "exec", "arguments": '{"input": "ls()"}'}},
        {"id": "c3", "type": "function", "function": {"name": "sleep", "arguments": "{}"}}]}}]}
    output = from_chat_response(request, chat, "m", "resp_1")["output"]
    assert [(i["type"], i["call_id"]) for i in output] == [
        ("custom_tool_call", "c2"), ("function_call", "c3")]
    assert output[0]["input"] == "ls()"
    # Codex dispatches a namespaced tool's call by its namespace ("unsupported call" without).
    assert (output[0]["namespace"], output[1]["namespace"]) == ("functions", "clock")
    message = {"content": [{"type": "tool_use", "id": "t1", "name": "exec", "input": {"input": "x"}}],
               "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 1}}
    assert from_message(request, message, "m", "resp_2")["output"][0]["input"] == "x"


def test_a_follow_up_calls_tools_an_earlier_turn_offered_in_their_own_shape() -> None:
    """Codex offers its tools once, in an `additional_tools` item; a follow-up continues with
    `previous_response_id` and only its new items. The call shapes come from the whole
    conversation, stored turns included."""
    history = codex_request()["input"]
    follow_up = {"model": "m", "previous_response_id": "resp_0",
                 "input": [{"role": "user", "content": "and again"}]}
    full = history + follow_up["input"]
    chat = {"choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "exec", "arguments": '{"input": "ls()"}'}}]}}]}
    assert from_chat_response(follow_up, chat, "m", "r", full)["output"][0]["type"] == "custom_tool_call"
    message = {"content": [{"type": "tool_use", "id": "t1", "name": "exec", "input": {"input": "x"}}],
               "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 1}}
    assert from_message(follow_up, message, "m", "r", full)["output"][0]["type"] == "custom_tool_call"
    raw = b"data: " + orjson.dumps({"choices": [{"index": 0, "finish_reason": "tool_calls", "delta": {
        "tool_calls": [{"index": 0, "id": "c9", "type": "function",
                        "function": {"name": "exec", "arguments": '{"input": "ls()"}'}}]}}]}) + b"\n\n"
    stream = ChatToResponsesStream(follow_up, "m", items=full)
    stream.feed(raw + b"data: [DONE]\n\n")
    stream.close()
    assert stream.final is not None and stream.final["output"][0]["type"] == "custom_tool_call"


@pytest.mark.parametrize(("choice", "sent"), [
    (None, {"type": "auto", "disable_parallel_tool_use": True}),
    ("auto", {"type": "auto", "disable_parallel_tool_use": True}),
    ({"type": "function", "name": "sleep"},
     {"type": "tool", "name": "sleep", "disable_parallel_tool_use": True}),
    ("none", {"type": "none"}),  # Anthropic defines no parallel flag for `none`
])
def test_parallel_tool_calls_false_reaches_anthropic_whatever_the_tool_choice(choice: Any, sent: Any) -> None:
    request: dict[str, Any] = {"model": "m", "input": "x", "tools": [SLEEP], "parallel_tool_calls": False}
    if choice is not None:
        request["tool_choice"] = choice
    assert to_messages_request(request, input_items(request), "claude")["tool_choice"] == sent


def test_a_streamed_custom_tool_call_is_one_the_sdk_reads() -> None:
    request = codex_request()
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c9", "type": "function",
             "function": {"name": "exec", "arguments": '{"inp'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": 'ut": "ls()"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    raw = b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"
    stream = ChatToResponsesStream(request, "m")
    out = stream.feed(raw) + stream.close()
    events = [EVENTS.validate_python(orjson.loads(e.data)) for e in SSEDecoder().feed(out)]
    kinds = [event.type for event in events]
    assert "response.custom_tool_call_input.done" in kinds
    assert "response.function_call_arguments.delta" not in kinds  # the JSON wrapper stays inside
    done = [e for e in events if e.type == "response.output_item.done"]
    assert done[0].item.type == "custom_tool_call" and done[0].item.input == "ls()"
    assert stream.final is not None and stream.final["output"][0]["namespace"] == "functions"
    assert stream.final is not None and stream.final["output"][0]["input"] == "ls()"


def test_the_captured_codex_turn_translates_to_messages_with_its_tools() -> None:
    fixture = json.loads((fixture_path("harness") / "codex_responses_tool_output.json").read_text())
    body = fixture["body"]
    drops: list[str] = []
    messages = to_messages_request(body, input_items(body), "claude-x", drops)
    names = [tool["name"] for tool in messages["tools"]]
    assert "exec" in names and "wait" in names
    calls = [block for m in messages["messages"] if m["role"] == "assistant" for block in m["content"]
             if block["type"] == "tool_use"]
    assert calls[0]["name"] == "exec" and "tools.exec_command" in calls[0]["input"]["input"]


def test_a_whole_answer_cut_at_max_tokens_ends_its_last_item_incomplete_and_keeps_block_order() -> None:
    message = {"content": [{"type": "text", "text": "first"}, {"type": "tool_use", "id": "t1", "name": "go",
                                                                "input": {}},
                           {"type": "text", "text": "then"}],
               "stop_reason": "max_tokens",
               "usage": {"input_tokens": 4, "cache_creation_input_tokens": 2, "output_tokens": 9}}
    response = from_message({}, message, "m", "resp_1")
    assert [(o["type"], o["status"]) for o in response["output"]] == [
        ("message", "completed"), ("function_call", "completed"), ("message", "incomplete")]
    assert response["usage"]["input_tokens_details"]["cache_write_tokens"] == 2
    chat = {"choices": [{"message": {"content": "cut sho"}, "finish_reason": "length"}]}
    assert from_chat_response({}, chat, "m", "resp_2")["output"][0]["status"] == "incomplete"


def test_allowed_tools_offers_a_chat_model_only_those() -> None:
    functions = [{"type": "function", "name": name, "parameters": {"type": "object"}} for name in "abc"]
    request: dict[str, Any] = {"input": "x", "tools": functions, "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}}
    chat = to_chat_request(request, input_items(request), "m", [])
    assert [tool["function"]["name"] for tool in chat["tools"]] == ["b"]
    assert chat["tool_choice"] == "required"
    messages = to_messages_request(request, input_items(request), "claude", [])
    assert [tool["name"] for tool in messages["tools"]] == ["b"]


def test_a_json_schema_format_is_anthropic_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    request: dict[str, Any] = {"input": "x", "text": {"format": {
        "type": "json_schema", "name": "answer", "schema": schema, "strict": True}}}
    drops: list[str] = []
    messages = to_messages_request(request, input_items(request), "claude", drops)
    assert messages["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert drops == []
    loose: dict[str, Any] = {"input": "x", "text": {"format": {"type": "json_object"}}}
    assert "output_config" not in to_messages_request(loose, input_items(loose), "claude", drops)
    assert drops == ["response_format"]  # any JSON: no Anthropic equivalent, left out and counted
