"""A near-zero-cost fake upstream for `make bench`: raw asyncio (uvloop) HTTP/1.1, canned answers.

Like nginx's `return 200 '...'`: no routing, no JSON parsing, keep-alive. A body containing
`"stream":true` is answered with an SSE stream of `chunks` events (default 16) plus `[DONE]`,
`interval_ms` apart, both read from an optional `"bench":{"chunks":N,"interval_ms":M}` field.

    python loadtest/upstream.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import cast

import orjson

CHAT = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "bench-model", "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
})
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(CHAT)).encode() + b"\r\n\r\n" + CHAT
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
DEFAULT_CHUNKS = 16
_BENCH = re.compile(rb'"bench":\{"chunks":(\d+),"interval_ms":(\d+)\}')


def sse_chunk(index: int, last: bool = False) -> bytes:
    delta = {} if last else {"content": f" tok{index}"}
    event = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "bench-model",
             "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}]}
    if last:
        event["usage"] = {"prompt_tokens": 9, "completion_tokens": index, "total_tokens": 9 + index}
    data = b"data: " + orjson.dumps(event) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_parts(chunks: int) -> list[bytes]:
    """The HTTP chunks of one stream: `chunks` token events, a final one, [DONE], the end."""
    done = b"data: [DONE]\n\n"
    return [
        *(sse_chunk(i) for i in range(chunks - 1)), sse_chunk(chunks - 1, last=True),
        b"%x\r\n%s\r\n" % (len(done), done), b"0\r\n\r\n",
    ]


def content_length(head: bytes) -> int:
    at = head.lower().find(b"content-length:")
    if at < 0:
        return 0
    stop = head.find(b"\r\n", at)
    return int(head[at + 15 : stop if stop >= 0 else None])


class Upstream(asyncio.Protocol):
    """One keep-alive connection: answers each complete request as soon as it has arrived."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.streaming: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None:
            self.streaming.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            total = end + 4 + content_length(bytes(self.buffer[:end]))
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            if b'"stream":true' in body:
                match = _BENCH.search(body)
                chunks, interval = (int(match[1]), int(match[2])) if match else (DEFAULT_CHUNKS, 0)
                self.streaming = asyncio.ensure_future(self.stream(chunks, interval / 1000))
            else:
                self.transport.write(RESPONSE)

    async def stream(self, chunks: int, interval: float) -> None:
        assert self.transport is not None
        parts = stream_parts(max(1, chunks))
        self.transport.write(STREAM_HEAD + parts[0])
        if not interval:
            self.transport.write(b"".join(parts[1:]))
            return
        for part in parts[1:-2]:
            await asyncio.sleep(interval)
            self.transport.write(part)
        self.transport.write(parts[-2] + parts[-1])


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
