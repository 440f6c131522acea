"""Inbound limits (gateway/server.py): a request head is capped while it is read, slow clients
are dropped with a log line and a metric, and connections past the cap get a 503.

Raw sockets against a real gateway: in a thread for the single behaviours, and as the real
`serve` command for the flood (memory read from /proc) and for `--workers 2`.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import parse_config
from gateway.server import InboundLimits
from tests.configs import three_models
from tests.support import Served, ThreadServer, answer_lifespan, gateway, read_all, serve, wait_for

NOWHERE = "http://127.0.0.1:9"  # no upstream is called here
LIMITS = {"max_header_bytes": 4096, "max_header_count": 20,
          "header_timeout_seconds": 0.5, "body_timeout_seconds": 0.5}
HEAD = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n"


def config_with(limits: dict[str, Any] | None = None, server: dict[str, Any] | None = None) -> dict[str, Any]:
    config = three_models(NOWHERE)
    config["limits"] = LIMITS if limits is None else limits
    if server:
        config["server"] = server
    return config


@pytest.fixture
def replica() -> Iterator[ThreadServer]:
    with gateway(config_with()) as server:
        yield server


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout bounds it)."""
    received = b""
    with sock:
        while chunk := sock.recv(65536):
            received += chunk
    return received


def response(raw: bytes) -> tuple[int, dict[bytes, bytes], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, orjson.loads(body) if body else None


def read_response(reader: BinaryIO) -> tuple[int, bytes]:
    """One response with a content-length off a kept-alive connection (`sock.makefile("rb")`)."""
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, reader.read(length)


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def test_a_head_past_the_cap_is_refused_while_it_is_still_being_sent(replica: ThreadServer) -> None:
    sock = connect(replica.port)
    sock.sendall(HEAD)
    for index in range(8):  # 8 KB of header lines, and the head never ends
        sock.sendall(b"X-Pad-%d: %s\r\n" % (index, b"p" * 1000))
    status, headers, body = response(until_closed(sock))
    assert (status, body["error"]["code"]) == (431, "headers_too_large")
    assert headers[b"connection"] == b"close"
    assert body["error"]["type"] == "invalid_request_error"
    assert metric(replica.url, "gateway_inbound_refused_total", reason="headers_too_large") == 1


def test_a_head_past_the_cap_that_comes_whole_in_one_write_is_refused_too(replica: ThreadServer) -> None:
    """Whole in one read, the head ends before the per-read check: it is measured as it ends
    (before, GET /v1/models answered 200 to a 70 KB head under a 4 KB cap)."""
    sock = connect(replica.port)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: g\r\nX-Pad: " + b"p" * 70_000 + b"\r\n\r\n")
    status, headers, body = response(until_closed(sock))
    assert (status, body["error"]["code"]) == (431, "headers_too_large")
    assert headers[b"connection"] == b"close"
    # A head within the cap, in one read with a body that takes the read past it: served.
    body = orjson.dumps({"messages": [{"role": "user", "content": "x" * 2_000}]})
    sock = connect(replica.port)
    sock.sendall(b"POST /routing/v1/chat/completions HTTP/1.1\r\nHost: g\r\nX-Pad: " + b"p" * 3_000
                 + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    assert sock.recv(12) == b"HTTP/1.1 200"
    sock.close()


def test_too_many_headers_are_refused_and_the_request_never_reaches_the_app(replica: ThreadServer) -> None:
    sock = connect(replica.port)
    lines = b"".join(b"X-H%d: v\r\n" % index for index in range(30))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\n" + lines
                 + b"content-length: 2\r\n\r\n{}")
    status, headers, body = response(until_closed(sock))
    assert (status, body["error"]["code"]) == (431, "too_many_headers")
    assert headers[b"connection"] == b"close"
    assert metric(replica.url, "gateway_requests_total", endpoint="chat_completions") == 0
    sock = connect(replica.port)  # the same, with a head that never ends
    sock.sendall(HEAD + lines)
    status, _, body = response(until_closed(sock))
    assert (status, body["error"]["code"]) == (431, "too_many_headers")
    assert metric(replica.url, "gateway_inbound_refused_total", reason="too_many_headers") == 2


def test_a_slow_head_is_dropped_with_a_log_line_and_a_metric(
    replica: ThreadServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.server")
    sock = connect(replica.port)
    sock.sendall(HEAD + b"X-Slow: still typing")
    status, _, body = response(until_closed(sock))
    assert (status, body["error"]["code"]) == (408, "request_timeout")
    assert "head" in body["error"]["message"]
    dropped = [r for r in caplog.records if r.name == "gateway.server"]
    assert [r.getMessage() for r in dropped] == [
        "dropped a slow client: no complete request head within 0.5 s"]
    assert dropped[0].fields["phase"] == "head"  # type: ignore[attr-defined]
    assert metric(replica.url, "gateway_slow_clients_dropped_total", phase="head") == 1


def test_a_slow_body_is_dropped(replica: ThreadServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.server")
    sock = connect(replica.port)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\ncontent-type: application/json\r\n"
                 b"content-length: 100\r\n\r\n{\"messages\"")
    status, _, body = response(until_closed(sock))
    assert (status, body["error"]["code"]) == (408, "request_timeout")
    assert "dropped a slow client: no complete request body within 0.5 s" in caplog.messages
    assert metric(replica.url, "gateway_slow_clients_dropped_total", phase="body") == 1
    # the app's read of the body ended there: nothing is left in flight
    wait_for(lambda: metric(replica.url, "gateway_inflight_requests") == 0)
    # and it is counted as what the client was answered, not as a client that left (499)
    assert metric(replica.url, "gateway_requests_total", endpoint="chat_completions", status="408") == 1
    assert metric(replica.url, "gateway_requests_total", status="499") == 0


def test_under_v1_messages_an_error_before_any_endpoint_is_in_anthropics_envelope(
    replica: ThreadServer,
) -> None:
    """An Anthropic SDK reads `{"type": "error", "error": {"type", "message"}}`, also for a path
    or method the gateway does not serve, or a request refused on the wire."""
    wrong_method = httpx.get(f"{replica.url}/v1/messages")
    unknown = httpx.post(f"{replica.url}/v1/messages/batches", json={})
    for answer, status in ((wrong_method, 405), (unknown, 404)):
        assert answer.status_code == status
        assert answer.json()["type"] == "error" and answer.json()["error"]["message"]
    assert wrong_method.headers["allow"] == "POST"
    assert httpx.get(f"{replica.url}/routing/v1/messages").json()["type"] == "error"  # its routing twin
    sock = connect(replica.port)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: g\r\ncontent-type: application/json\r\n"
                 b"content-length: 100\r\n\r\n{\"messages\"")
    status, _, body = response(until_closed(sock))
    assert (status, body["type"]) == (408, "error")
    assert body["error"]["message"] == "request body not received within 0.5 s"
    assert httpx.get(f"{replica.url}/v1/nothing").json()["error"]["code"] == "not_found"  # OpenAI's


def test_a_connection_that_never_sends_a_byte_is_closed_without_an_answer(replica: ThreadServer) -> None:
    assert until_closed(connect(replica.port)) == b""
    assert metric(replica.url, "gateway_slow_clients_dropped_total", phase="head") == 1


def test_requests_inside_the_limits_are_untouched(replica: ThreadServer) -> None:
    sock = connect(replica.port)
    with sock, sock.makefile("rb") as reader:
        # One kept-alive connection busy for three head timeouts: the deadline of each request
        # is its own, so the connection is never dropped for its age.
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            sock.sendall(HEAD + b"\r\n")
            assert read_response(reader) == (200, b'{"status":"ok"}')
            time.sleep(0.05)
        # A head sent in pieces well inside its time, just under both caps.
        sock.sendall(HEAD)
        for index in range(17):
            sock.sendall(b"X-Pad-%d: %s\r\n" % (index, b"p" * 200))
            time.sleep(0.01)
        sock.sendall(b"\r\n")
        assert read_response(reader)[0] == 200
    assert metric(replica.url, "gateway_slow_clients_dropped_total", phase="head") == 0
    assert metric(replica.url, "gateway_inbound_refused_total", reason="headers_too_large") == 0


async def slow_then_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/slow answers after a second (two body timeouts); anything else echoes its body."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
        body = b"slow"
    else:
        body = await read_all(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_a_pipelined_request_waits_for_its_turn_without_its_body_clock_running() -> None:
    config = parse_config(config_with(), environ={})
    with serve(slow_then_echo, config) as server, connect(server.port) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: g\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: g\r\ncontent-length: 10\r\n\r\nhello")
        time.sleep(0.2)  # the rest of the queued body, sent while the first request is served
        sock.sendall(b"world")
        assert read_response(reader) == (200, b"slow")
        assert read_response(reader) == (200, b"helloworld")


def test_connections_past_the_cap_get_a_503_until_one_closes() -> None:
    with gateway(config_with({}, {"max_connections": 3})) as replica:
        held = [connect(replica.port) for _ in range(3)]
        refused = httpx.get(f"{replica.url}/v1/models")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "too_many_connections"
        assert refused.headers["retry-after"] == "1"
        # A full pod is alive (liveness must not get it restarted), but not ready for more.
        assert httpx.get(f"{replica.url}/healthz").status_code == 200
        assert httpx.get(f"{replica.url}/readyz").status_code == 503
        held.pop().close()
        wait_for(lambda: httpx.get(f"{replica.url}/v1/models").status_code == 200)
        for sock in held:
            sock.close()
        wait_for(lambda: metric(replica.url, "gateway_inbound_refused_total",
                                reason="too_many_connections") >= 1)


def test_the_connection_cap_is_the_replicas_shared_by_its_workers() -> None:
    config = parse_config(config_with({}, {"max_connections": 10}), environ={})
    assert InboundLimits.from_config(config).max_connections == 10
    assert InboundLimits.from_config(config, workers=4).max_connections == 3


def test_serve_with_workers_enforces_the_limits_in_every_worker(tmp_path: Path, redis_url: str) -> None:
    config = three_models(NOWHERE, redis_url)
    config["limits"] = LIMITS
    served = Served(config, tmp_path, "--workers", "2")
    try:
        for _ in range(4):  # the kernel hands connections to either worker
            sock = connect(served.port)
            sock.sendall(HEAD + b"X-Pad: " + b"p" * 5000)
            status, _, body = response(until_closed(sock))
            assert (status, body["error"]["code"]) == (431, "headers_too_large")
        pid = served.process.pid
        # two workers (and multiprocessing's resource tracker)
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        assert len(children) >= 2
    finally:
        served.stop()
    # they went with their supervisor (they once outlived the test run)
    wait_for(lambda: not any(Path(f"/proc/{child}").exists() for child in children),
             message="serve's workers outlived it")


FLOOD_SECONDS = 3.0
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def flood(port: int, line: bytes, pause: float, stop: threading.Event, outcomes: Counter[str]) -> None:
    """Send header lines on one connection after another, never ending a head, and note how each
    connection ended: 431 (refused), 408 (dropped as slow), closed, or anything else."""
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gateway\r\n")
                while not stop.is_set():
                    if select.select([sock], [], [], 0)[0]:
                        break
                    sock.sendall(line)
                    if pause:
                        time.sleep(pause)
                answer = sock.recv(65536) if not stop.is_set() else b"stopped"
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
        if answer.startswith(b"HTTP/1.1 431"):
            outcomes["refused"] += 1
        elif answer.startswith(b"HTTP/1.1 408") or answer == b"":
            outcomes["dropped"] += 1
        elif answer != b"stopped":
            outcomes["other"] += 1


def healthz(port: int) -> bytes:
    """A probe on a connection of its own, as a kubelet's; the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(HEAD + b"Connection: close\r\n\r\n")
        return until_closed(sock).split(b"\r\n", 1)[0]


def test_four_head_flooders_are_cut_off_while_healthz_answers_and_memory_stays_flat(tmp_path: Path) -> None:
    config = three_models(NOWHERE)
    config["limits"] = {"header_timeout_seconds": 1.0}
    config["logging"] = {"level": "error"}
    served = Served(config, tmp_path)
    try:
        for _ in range(200):  # warm up: allocations of a served request are made once
            assert healthz(served.port) == b"HTTP/1.1 200 OK"
        idle = rss_bytes(served.process.pid)
        stop = threading.Event()
        outcomes: list[Counter[str]] = [Counter() for _ in range(4)]
        flooders = [  # two as fast as they can (the size cap), two a line at a time (the clock)
            threading.Thread(target=flood, args=(served.port, b"X-Flood: " + b"f" * 16384 + b"\r\n", 0.0,
                                                 stop, outcomes[0])),
            threading.Thread(target=flood, args=(served.port, b"X-Flood: " + b"f" * 16384 + b"\r\n", 0.0,
                                                 stop, outcomes[1])),
            threading.Thread(target=flood, args=(served.port, b"X-Slow: s\r\n", 0.05, stop, outcomes[2])),
            threading.Thread(target=flood, args=(served.port, b"X-Slow: s\r\n", 0.05, stop, outcomes[3])),
        ]
        for flooder in flooders:
            flooder.start()
        peak, answered = idle, 0
        try:
            deadline = time.monotonic() + FLOOD_SECONDS
            while time.monotonic() < deadline:
                assert healthz(served.port) == b"HTTP/1.1 200 OK"
                answered += 1
                peak = max(peak, rss_bytes(served.process.pid))
        finally:
            stop.set()
            for flooder in flooders:
                flooder.join(timeout=15)
        assert answered > 0
        assert peak - idle < 50 * MIB, f"RSS grew by {(peak - idle) / MIB:.1f} MiB"
        assert outcomes[0]["refused"] > 1 and outcomes[1]["refused"] > 1, outcomes
        assert outcomes[2]["dropped"] >= 1 and outcomes[3]["dropped"] >= 1, outcomes
        assert all(outcome["other"] == 0 for outcome in outcomes), outcomes
    finally:
        served.stop()
