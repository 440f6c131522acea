"""A capturing stub that speaks just enough of the OpenAI Responses API for Codex to proceed.

Used only to learn what Codex sends while the gateway has no /v1/responses: it records every
request and answers a streamed Responses turn. The first turn of a conversation answers with an
encrypted reasoning item and a read-only `ls` through the harness's shell tool (`exec_command`
as a function call, or code mode's custom `exec` tool), so the next request shows how the
harness sends back reasoning, calls and their outputs; later turns answer with text. Events
and fields follow the openai-python types: response.created, response.in_progress, then per
item response.output_item.added, its deltas (output_text / function_call_arguments /
custom_tool_call_input) and response.output_item.done, and response.completed with usage.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from interop.capture import Exchange, Recorder, masked, parse_body
from interop.servers import Receive, Scope, Send, read_body

_SHELL_TOOLS = ("exec_command", "shell_command", "shell")


class ResponsesStub:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        body = parse_body(raw)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        exchange = Exchange(
            seq=self.recorder.next_seq(), harness=self.recorder.harness, target="stub", replica=None,
            method=scope["method"], path=scope["path"], query=scope["query_string"].decode("latin-1"),
            headers=masked(headers), body=body,
        )
        if scope["method"] == "POST" and scope["path"].endswith("/responses") and isinstance(body, dict):
            exchange.status = 200
            self.recorder.write(exchange)
            await self._answer(body, send)
            return
        exchange.status = 404
        self.recorder.write(exchange)
        message = json.dumps({"error": {"message": f"stub: no {scope['method']} {scope['path']}",
                                        "type": "invalid_request_error", "param": None,
                                        "code": "not_found"}}).encode()
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": message})

    async def _answer(self, request: dict[str, Any], send: Send) -> None:
        number = next(self._ids)
        events = _events(request, _output(request, number), f"resp_stub{number:04d}")
        if request.get("stream") is False:
            final = events[-1]["response"]
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(final).encode()})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for sequence, event in enumerate(events):
            event["sequence_number"] = sequence
            data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            await send({"type": "http.response.body", "body": data.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _output(request: dict[str, Any], number: int) -> list[dict[str, Any]]:
    """A reasoning item and a tool call on the conversation's first turn, else a message."""
    items: list[Any] = request["input"] if isinstance(request.get("input"), list) else []
    answered = any(isinstance(i, dict) and str(i.get("type", "")).endswith("_call_output") for i in items)
    call = None if answered else _call(_tools(request), number)
    if call is None:
        text = "Stub answer: the listing came back." if answered else "Stub answer."
        return [{"type": "message", "id": f"msg_stub{number:04d}", "role": "assistant",
                 "status": "completed",
                 "content": [{"type": "output_text", "text": text, "annotations": []}]}]
    # An encrypted reasoning item, as a reasoning model sends with store=false: the harness
    # should send it back in its next request's input.
    reasoning = {"type": "reasoning", "id": f"rs_stub{number:04d}", "encrypted_content": "c3R1Yg==",
                 "summary": [{"type": "summary_text", "text": "List the files first."}]}
    return [reasoning, call]


def _tools(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every tool by name: top level, inside namespaces, and in `additional_tools` input items."""
    found: dict[str, dict[str, Any]] = {}
    pending: list[Any] = list(request.get("tools") or [])
    for item in request.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            pending += item.get("tools") or []
    while pending:
        tool = pending.pop()
        if isinstance(tool, dict):
            pending += tool.get("tools") or []  # a namespace
            if isinstance(tool.get("name"), str):
                found[tool["name"]] = tool
    return found


def _call(tools: dict[str, dict[str, Any]], number: int) -> dict[str, Any] | None:
    """A read-only `ls` through the harness's shell tool, or its code-mode `exec` tool."""
    ids = {"call_id": f"call_stub{number:04d}", "status": "completed"}
    for name in _SHELL_TOOLS:
        tool = tools.get(name)
        properties = ((tool or {}).get("parameters") or {}).get("properties") or {}
        for param in ("cmd", "command"):
            if param in properties:
                value: Any = ["ls"] if properties[param].get("type") == "array" else "ls"
                return {"type": "function_call", "id": f"fc_stub{number:04d}", "name": name,
                        "arguments": json.dumps({param: value}), **ids}
    if tools.get("exec", {}).get("type") == "custom":
        source = 'const listing = await tools.exec_command({cmd: "ls"});\ntext(listing);'
        return {"type": "custom_tool_call", "id": f"ctc_stub{number:04d}", "name": "exec",
                "input": source, **ids}
    return None


def _events(request: dict[str, Any], items: list[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    model = str(request.get("model", "stub"))
    base = {"id": response_id, "object": "response", "created_at": int(time.time()), "model": model,
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "error": None, "incomplete_details": None, "instructions": None, "metadata": {}}
    started = {**base, "status": "in_progress"}
    events: list[dict[str, Any]] = [{"type": "response.created", "response": started},
                                    {"type": "response.in_progress", "response": started}]
    for index, item in enumerate(items):
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": _opened(item)})
        events += _deltas(item, index)
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    prompt = len(json.dumps(request.get("input"))) // 4
    usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 8,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + 8}
    done = {**base, "status": "completed", "output": items, "usage": usage}
    return [*events, {"type": "response.completed", "response": done}]


def _opened(item: dict[str, Any]) -> dict[str, Any]:
    empty: dict[str, dict[str, Any]] = {"message": {"content": []}, "function_call": {"arguments": ""},
             "custom_tool_call": {"input": ""}, "reasoning": {"summary": []}}
    return {**item, **empty.get(item["type"], {}), "status": "in_progress"}


def _deltas(item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    at = {"item_id": item["id"], "output_index": index}
    if item["type"] == "message":
        part, text = item["content"][0], item["content"][0]["text"]
        at = {**at, "content_index": 0}
        return [
            {"type": "response.content_part.added", **at, "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", **at, "delta": text, "logprobs": []},
            {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **at, "part": part},
        ]
    if item["type"] == "function_call":
        return [
            {"type": "response.function_call_arguments.delta", **at, "delta": item["arguments"]},
            {"type": "response.function_call_arguments.done", **at, "arguments": item["arguments"]},
        ]
    if item["type"] == "custom_tool_call":
        return [
            {"type": "response.custom_tool_call_input.delta", **at, "delta": item["input"]},
            {"type": "response.custom_tool_call_input.done", **at, "input": item["input"]},
        ]
    return []
