"""A small wrk-style HTTP/1.1 load generator for `make bench`: raw asyncio protocol on uvloop.

Several times faster than an aiohttp client on one core, so it does not cap what it measures.
Closed loop (each connection sends its next request when the last answer ends) or open loop
at a fixed rate (latency counted from the scheduled send time, so a stalled server cannot hide
its queue). Streams (chunked SSE) are timed to the first body byte and their `data:` events
counted. Prints one JSON object with the results.

    python loadtest/loadgen.py --url http://127.0.0.1:9000/v1/chat/completions \\
        --connections 16 --duration 5 [--rate 2000] [--stream] [--affinity 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

BODY = {"model": "bench-model", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello! Summarise the plot of Hamlet in two sentences."},
]}
AFFINITY_HEADER = b"\r\nx-model-affinity-status: "


@dataclass(slots=True)
class Answer:
    status: int = 0
    affinity: str = ""  # x-model-affinity-status, when the server sent one
    first: float = 0.0  # perf_counter() of the first body bytes
    last: float = 0.0
    gap: float = 0.0  # longest silence between body reads
    body: bytearray = field(default_factory=bytearray)  # kept for streams only


class Connection(asyncio.Protocol):
    """One keep-alive connection; `request()` sends bytes and waits for the whole answer."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.answer = Answer()
        self.start = -1  # body offset, once the head has been parsed
        self.length = 0
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def request(self, data: bytes) -> asyncio.Future[Answer]:
        if self.transport is None:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.answer = Answer()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        answer = self.answer
        if self.start < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            answer.status = int(head[9:12])
            at = head.find(AFFINITY_HEADER)
            if at >= 0:
                at += len(AFFINITY_HEADER)
                stop = head.find(b"\r\n", at)
                answer.affinity = head[at : stop if stop >= 0 else None].decode()
            self.chunked = b"transfer-encoding: chunked" in head
            at = head.find(b"content-length:")
            stop = head.find(b"\r\n", at)
            self.length = int(head[at + 15 : stop if stop >= 0 else None]) if at >= 0 else 0
            self.start = end + 4
        if len(self.buffer) > self.start:
            if answer.first:
                answer.gap = max(answer.gap, now - answer.last)
            else:
                answer.first = now
            answer.last = now
        done = self._chunks() if self.chunked else self._whole()
        if done >= 0:
            del self.buffer[:done]
            self.start = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(answer)

    def _whole(self) -> int:
        end = self.start + self.length
        return end if len(self.buffer) >= end else -1

    def _chunks(self) -> int:
        """Consume complete chunks into the answer; the end offset after the last one, or -1."""
        buffer, position = self.buffer, self.start
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                break
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
            if size == 0:
                if len(buffer) >= line_end + 4:
                    return line_end + 4
                break
            if len(buffer) < line_end + 2 + size + 2:
                break
            self.answer.body += buffer[line_end + 2 : line_end + 2 + size]
            position = line_end + 2 + size + 2
        del buffer[self.start : position]  # keep the head offset; drop what was consumed
        return -1


def build_requests(url: str, body: bytes, affinity: int, extra: list[str]) -> list[bytes]:
    parts = urlsplit(url)
    head = (f"POST {parts.path or '/'} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n")
    head += "".join(f"{h}\r\n" for h in extra)
    sessions = [f"x-model-affinity: bench-{i:06d}\r\n" for i in range(affinity)] or [""]
    return [(head + s + "\r\n").encode() + body for s in sessions]


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    events: Counter[int] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    affinity: Counter[str] = field(default_factory=Counter)
    gap: float = 0.0
    errors: int = 0

    def record(self, sent: float, answer: Answer, stream: bool) -> None:
        self.latencies.append(time.perf_counter() - sent)
        self.statuses[answer.status] += 1
        if answer.affinity:
            self.affinity[answer.affinity] += 1
        if stream:
            self.ttfts.append(answer.first - sent)
            self.events[answer.body.count(b"data:")] += 1
            self.gap = max(self.gap, answer.gap)


async def worker(
    connection: Connection, requests: list[bytes], index: int, stride: int, run: Run,
    deadline: float, limit: int, rate: float, stream: bool,
) -> None:
    sent_count = 0
    started = time.perf_counter()
    while sent_count < limit:
        if rate:  # open loop: this connection's k-th slot, staggered against the others
            scheduled = started + (sent_count * stride + index) / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            scheduled = time.perf_counter()
        if scheduled >= deadline:
            return
        data = requests[(index + sent_count * stride) % len(requests)]
        sent_count += 1
        try:
            answer = await connection.request(data)
        except ConnectionError:
            run.errors += 1
            return
        run.record(scheduled, answer, stream)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    payload = orjson.loads(args.body) if args.body else dict(BODY)
    if args.stream:
        payload["stream"] = True
        payload["bench"] = {"chunks": args.chunks, "interval_ms": args.interval_ms}
    requests = build_requests(args.url, orjson.dumps(payload), args.affinity, args.header)
    parts = urlsplit(args.url)
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(args.connections):
        _, protocol = await loop.create_connection(
            Connection, parts.hostname or "127.0.0.1", parts.port or 80)
        connections.append(protocol)
    limit = args.requests_per_connection or sys.maxsize
    warmup = 0
    if args.warmup:
        warmup = len((await run_once(connections, requests, args.warmup, limit, 0.0,
                                     args.stream)).latencies)
    started = time.perf_counter()
    run = await run_once(connections, requests, args.duration, limit, args.rate, args.stream)
    elapsed = time.perf_counter() - started
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    return {**summarise(run, elapsed), "warmup": warmup}


async def run_once(connections: list[Connection], requests: list[bytes], duration: float,
                   limit: int, rate: float, stream: bool) -> Run:
    run = Run()
    deadline = time.perf_counter() + duration
    await asyncio.gather(*(
        worker(c, requests, i, len(connections), run, deadline, limit, rate, stream)
        for i, c in enumerate(connections)
    ))
    return run


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summarise(run: Run, elapsed: float) -> dict[str, Any]:
    ms = 1000.0
    ok = run.statuses.get(200, 0)
    return {
        "requests": len(run.latencies), "ok": ok, "errors": run.errors + len(run.latencies) - ok,
        "elapsed_s": round(elapsed, 3), "rps": round(len(run.latencies) / elapsed, 1),
        "p50_ms": round(percentile(run.latencies, 0.50) * ms, 3),
        "p99_ms": round(percentile(run.latencies, 0.99) * ms, 3),
        "max_ms": round(max(run.latencies, default=0.0) * ms, 3),
        "mean_ms": round(statistics.fmean(run.latencies) * ms, 3) if run.latencies else 0.0,
        "ttft_p50_ms": round(percentile(run.ttfts, 0.50) * ms, 3),
        "ttft_p99_ms": round(percentile(run.ttfts, 0.99) * ms, 3),
        "events": {str(k): v for k, v in sorted(run.events.items())},
        "max_gap_ms": round(run.gap * ms, 3),
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "affinity": dict(sorted(run.affinity.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds run first, not counted")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s in all (open loop)")
    parser.add_argument("--requests-per-connection", type=int, default=0)
    parser.add_argument("--affinity", type=int, default=0, help="distinct X-Model-Affinity ids")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--interval-ms", type=int, default=0)
    parser.add_argument("--body", help="JSON request body (default: a small chat)")
    parser.add_argument("--header", action="append", default=[], help="'name: value'")
    args = parser.parse_args()
    import uvloop

    print(orjson.dumps(uvloop.run(measure(args))).decode())


if __name__ == "__main__":
    main()
