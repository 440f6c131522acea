"""The route table: exact and parameter paths, 404 and 405 in the envelope, a bug as a 500
envelope, and the lifespan protocol around one context manager."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.http import respond
from gateway.routes import Prefixed, Routes
from gateway.types import Message, Receive, Scope, Send


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = {"path": scope["path"], "params": scope.get("path_params")}
    await respond(send, 200, orjson.dumps(body), [])


async def broken(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("secret internals")


async def half_sent(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("after the start")


def routes(events: list[str] | None = None) -> Routes:
    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        if events is not None:
            events.append("up")
        yield
        if events is not None:
            events.append("down")

    exact = {"/a": {"GET": echo, "POST": echo}, "/bug": {"GET": broken}, "/half": {"GET": half_sent}}
    return Routes(exact, (Prefixed("/items/", "item", {"GET": echo}),), lifespan)


def call(app: Routes, method: str, path: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent


def status_and_body(sent: list[Message]) -> tuple[int, Any]:
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def test_exact_and_parameter_paths() -> None:
    app = routes()
    assert status_and_body(call(app, "POST", "/a")) == (200, {"path": "/a", "params": None})
    status, body = status_and_body(call(app, "GET", "/items/x/y z"))
    assert (status, body["params"]) == (200, {"item": "x/y z"})  # the parameter may hold slashes


@pytest.mark.parametrize("path", ["/nowhere", "/items/", "/a/"])
def test_an_unknown_path_is_a_404_envelope(path: str) -> None:
    status, body = status_and_body(call(routes(), "GET", path))
    assert status == 404
    assert body["error"] == {"message": f"no route for {path}", "type": "invalid_request_error",
                             "param": None, "code": "not_found"}


def test_a_wrong_method_is_a_405_naming_the_allowed_ones() -> None:
    sent = call(routes(), "DELETE", "/a")
    assert sent[0]["status"] == 405
    assert (b"allow", b"GET, POST") in sent[0]["headers"]
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "method_not_allowed"


def test_a_bug_is_a_500_envelope_without_the_details() -> None:
    sent = call(routes(), "GET", "/bug")
    status, body = status_and_body(sent)
    assert (status, body["error"]["code"]) == (500, "internal_error")
    assert b"secret" not in sent[1]["body"]


def test_a_bug_after_the_response_began_sends_nothing_more() -> None:
    sent = call(routes(), "GET", "/half")
    assert [m["type"] for m in sent] == ["http.response.start"]


def test_the_lifespan_protocol_runs_the_context_manager() -> None:
    events: list[str] = []
    app = routes(events)
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> Message:
        return next(incoming)

    async def send(message: Message) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert events == ["up", "down"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_a_failed_startup_is_reported_with_its_message() -> None:
    @contextlib.asynccontextmanager
    async def failing() -> AsyncIterator[None]:
        raise RuntimeError("redis refused the password")
        yield

    app = Routes({}, (), failing)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError):
        asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.failed", "message": "redis refused the password"}]


def test_the_table_lists_every_path_and_method() -> None:
    assert sorted(routes().table()) == [
        ("/a", "GET"), ("/a", "POST"), ("/bug", "GET"), ("/half", "GET"), ("/items/{item}", "GET")]
