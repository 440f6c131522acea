"""The round-robin front: alternates requests between gateway replicas and records each one.

A raw ASGI app over httpx, run under uvicorn on loopback. Every request (any method, any path,
including the ones the gateway answers 404) is forwarded to the next replica in turn, its
response streamed back as it arrives, and the whole exchange recorded with secrets masked.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import httpx

from interop import usage
from interop.capture import Exchange, Recorder, masked, parse_body
from interop.servers import Receive, Scope, Send, read_body

# Not forwarded: hop-by-hop headers, and accept-encoding so answers come back uncompressed
# (the front reads usage out of them).
_REQUEST_DROP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length",
                           "accept-encoding", "upgrade", "te", "proxy-connection"})
_RESPONSE_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                            "content-encoding"})
_KEEP_BYTES = 8 * 1024 * 1024  # of a response body, to read usage from
_ANSWER_CHARS = 600  # of an error answer, recorded


class Front:
    """ASGI app: `replicas` are base URLs; each request goes to the next one. `target` names
    what is behind it in the records (the gateway, or the simulator for direct captures)."""

    def __init__(self, replicas: Sequence[str], recorder: Recorder, target: str = "gateway") -> None:
        self.replicas = list(replicas)
        self.recorder = recorder
        self.target = target
        self._turn = itertools.cycle(range(len(self.replicas)))
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0), trust_env=False)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await self._client.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._client is not None, "the front serves only inside its lifespan"
        body = await read_body(receive)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        replica = next(self._turn)
        exchange = Exchange(
            seq=self.recorder.next_seq(), harness=self.recorder.harness, target=self.target,
            replica=replica + 1, method=scope["method"], path=scope["path"],
            query=scope["query_string"].decode("latin-1"), headers=masked(headers),
            body=parse_body(body),
        )
        url = self.replicas[replica] + scope["path"]
        if exchange.query:
            url += "?" + exchange.query
        outgoing = [(k, v) for k, v in headers if k.lower() not in _REQUEST_DROP]
        request = self._client.build_request(scope["method"], url, headers=outgoing, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            exchange.status, exchange.error = 502, f"front could not reach replica {replica + 1}: {error}"
            self.recorder.write(exchange)
            await _plain(send, 502, exchange.error)
            return
        kept = b""
        try:
            exchange.status = response.status_code
            exchange.response_headers = dict(response.headers.items())
            await send({"type": "http.response.start", "status": response.status_code, "headers": [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
                if k.lower() not in _RESPONSE_DROP
            ]})
            async for chunk in response.aiter_bytes():
                if len(kept) < _KEEP_BYTES:
                    kept += chunk
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as error:
            exchange.error = f"replica {replica + 1} broke off its answer: {error}"
        finally:
            await response.aclose()
            exchange.usage = usage.from_body(kept, response.headers.get("content-type", ""))
            if not 200 <= response.status_code < 300:
                exchange.answer = kept[:_ANSWER_CHARS].decode("utf-8", "replace")
            self.recorder.write(exchange)


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
