"""Loopback servers the run needs: ASGI apps under uvicorn in a thread, and the egress trap.

The harnesses get HTTPS_PROXY / HTTP_PROXY pointing at the trap (NO_PROXY covers 127.0.0.1), so
anything they try to reach outside the machine lands there instead: the trap writes down the
target and refuses it. The run prints those attempts; none of them leaves the machine.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


class ThreadServer:
    """An ASGI app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: Any, name: str) -> None:
        self.name = name
        # IPPROTO_TCP named, as uvicorn's own sockets do: only then does asyncio disable Nagle on
        # the connections it accepts (else a response in two writes waits ~40 ms for an ACK).
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.bind(("127.0.0.1", 0))  # bound here, so nothing takes the port before uvicorn
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the {self.name} did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


class EgressTrap:
    """A proxy that refuses everything and remembers what was asked: `CONNECT host:443`, or the
    absolute URL of a plain-HTTP request."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []  # (harness, target)
        self.harness = "unlabelled"
        trap = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.connection.settimeout(5)
                try:
                    line = self.rfile.readline(8192).decode("latin-1").strip()
                except OSError:
                    return
                parts = line.split()
                trap.attempts.append((trap.harness, parts[1] if len(parts) > 1 else line))
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="egress trap",
                                       daemon=True)

    def start(self) -> EgressTrap:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
