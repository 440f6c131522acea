"""Raw ASGI helpers for the hot path: headers, bounded body reads, whole responses."""

from __future__ import annotations

import asyncio

from gateway.errors import ClientClosed, GatewayError, PayloadTooLarge
from gateway.types import Headers, Receive, Scope, Send

# Where the server puts the error it answered a request with on the app's behalf (the app then
# only learns that the connection is gone), so the app records that status, not a 499.
REFUSED = "gateway.refused"


def header(scope: Scope, name: bytes) -> str | None:
    """A request header by lower-case name (ASGI servers lower-case them), latin-1 decoded."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def header_bytes(scope: Scope, name: bytes) -> bytes | None:
    """A request header's value as received (no decoding), by lower-case name."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            refused = scope.get(REFUSED)  # the server answered for the app (a body too slow: 408)
            if isinstance(refused, GatewayError):
                raise refused
            raise ClientClosed("the client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes", code="body_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, headers: Headers,
    content_type: bytes = b"application/json",
) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    })
    await send({"type": "http.response.body", "body": body})


async def wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client goes away (the request body has already been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class DisconnectWatch:
    """Cancels the task that made it if the client goes away before `stop()`, so no upstream
    wait or buffered read outlives its client (uvicorn never cancels a handler whose client
    left); `left` then says why. The watch starts after GRACE_S: a request answered sooner
    costs one timer rather than a task (several times dearer)."""

    __slots__ = ("_receive", "_task", "_timer", "_watch", "left")
    GRACE_S = 0.01

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[object] | None = asyncio.current_task()
        self._watch: asyncio.Future[None] | None = None
        self.left = False
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            self.GRACE_S, self._start)

    def _start(self) -> None:
        self._timer = None
        self._watch = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        await wait_for_disconnect(self._receive)
        task = self._task
        if task is not None:  # still armed: the task is suspended inside the watched part
            self.left = True
            task.cancel()

    def stop(self) -> None:
        self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
