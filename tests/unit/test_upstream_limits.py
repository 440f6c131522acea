"""The upstream client's limits against scripted servers, on asyncio and uvloop: endless bodies,
headers and error bodies are cut at their limits with a 502 naming the key; per-origin caps
and the bounded wait for a connection; first-byte versus read timeouts; the User-Agent; and
no failure leaves a body alive in a reference cycle."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from gateway.errors import BadGateway, ServiceUnavailable
from tests.support import Runner
from tests.unit.test_upstream import BODY, OK, Scripted, opened, reply, until

MIB = 1024 * 1024


async def endless_chunks(writer: asyncio.StreamWriter, head: bytes) -> None:
    """A chunked body that never ends (until the client goes away)."""
    writer.write(head + b"transfer-encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    while not writer.is_closing():
        writer.write(framed)
        await writer.drain()


def test_an_endless_body_is_a_502_at_max_response_bytes(runner: Runner) -> None:
    async def main() -> None:
        async def endless(writer: asyncio.StreamWriter, nth: int) -> bool:
            await endless_chunks(writer, b"HTTP/1.1 200 OK\r\n")
            return False

        async with Scripted(endless) as server:
            upstream = await opened(max_response_bytes=MIB)
            response = await upstream.post(server.url(), {}, BODY)
            with pytest.raises(BadGateway) as caught:
                await response.read()
            assert caught.value.reason == "too_large"
            assert "upstream.max_response_bytes (1048576 bytes)" in caught.value.message
            await until(lambda: server.open == 0)  # dropped, not drained
            await upstream.close()
    runner(main())


def test_a_declared_length_past_the_limit_fails_before_reading(runner: Runner) -> None:
    async def main() -> None:
        huge = b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n"
        async with Scripted(reply(huge)) as server:
            upstream = await opened(max_response_bytes=MIB)
            response = await upstream.post(server.url(), {}, BODY)
            with pytest.raises(BadGateway, match="max_response_bytes"):
                await response.read()
            await upstream.close()
    runner(main())


def test_endless_headers_are_a_502_at_max_header_bytes(runner: Runner) -> None:
    async def main() -> None:
        async def endless(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
            while not writer.is_closing():
                writer.write(b"y" * 65536)
                await writer.drain()
            return False

        async with Scripted(endless) as server:
            upstream = await opened(max_header_bytes=8192)
            with pytest.raises(BadGateway) as caught:
                await upstream.post(server.url(), {}, BODY)
            assert "upstream.max_header_bytes (8192 bytes)" in caught.value.message
            await upstream.close()
    runner(main())


def test_headers_past_the_limit_that_come_in_one_write_are_a_502(runner: Runner) -> None:
    """Whole in one read, headers end before the per-read count sees them: they are measured
    as parsed (before, 60 KB of headers passed a 1 KiB limit)."""
    async def main() -> None:
        big = b"HTTP/1.1 200 OK\r\nx-big: " + b"y" * 4000 + b"\r\ncontent-length: 2\r\n\r\nok"
        async with Scripted(reply(big)) as server:
            upstream = await opened(max_header_bytes=1024)
            with pytest.raises(BadGateway, match=r"upstream.max_header_bytes \(1024 bytes\)"):
                await upstream.post(server.url(), {}, BODY)
            await upstream.close()
    runner(main())


@pytest.mark.parametrize("shape", ["many trailers", "one endless trailer"])
def test_endless_trailers_are_a_502_at_max_header_bytes(runner: Runner, shape: str) -> None:
    """Trailers came after every limit: a server sending them for ever grew the client's memory
    without bound (722 MB in 2 s)."""
    async def main() -> None:
        async def trailing(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
            if shape == "one endless trailer":
                writer.write(b"x-t: ")
            while not writer.is_closing():
                writer.write(b"x-t: 1\r\n" * 8192 if shape == "many trailers" else b"y" * 65536)
                await writer.drain()
            return False

        async with Scripted(trailing) as server:
            upstream = await opened(max_header_bytes=8192, max_response_bytes=MIB)
            response = await upstream.post(server.url(), {}, BODY)
            with pytest.raises(BadGateway, match="max_header_bytes"):
                await response.read()
            await until(lambda: server.open == 0)
            await upstream.close()
    runner(main())


def test_endless_interim_responses_are_a_502(runner: Runner) -> None:
    async def main() -> None:
        async def early_hints(writer: asyncio.StreamWriter, nth: int) -> bool:
            while not writer.is_closing():
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n")
                await writer.drain()
            return False

        async with Scripted(early_hints) as server:
            upstream = await opened()
            with pytest.raises(BadGateway) as caught:
                await upstream.post(server.url(), {}, BODY)
            assert caught.value.reason == "bad_response"
            await upstream.close()
    runner(main())


def test_an_endless_error_body_is_read_only_to_its_limit_and_the_connection_dropped(
    runner: Runner,
) -> None:
    async def main() -> None:
        async def failing(writer: asyncio.StreamWriter, nth: int) -> bool:
            await endless_chunks(writer, b"HTTP/1.1 500 Internal Server Error\r\n")
            return False

        async with Scripted(failing) as server:
            upstream = await opened(max_error_body_bytes=4096)
            response = await upstream.post(server.url(), {}, BODY)
            assert response.status == 500
            prefix = await response.read_some(upstream.config.max_error_body_bytes)
            assert prefix == b"x" * 4096
            await until(lambda: server.open == 0)
            await upstream.close()
    runner(main())


def test_a_short_error_body_is_read_whole_and_its_connection_kept(runner: Runner) -> None:
    async def main() -> None:
        error = b'{"error":{"message":"no"}}'
        answer = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: %d\r\n\r\n%s" % (len(error), error)
        async with Scripted(reply(answer)) as server:
            upstream = await opened()
            for _ in range(2):
                response = await upstream.post(server.url(), {}, BODY)
                assert await response.read_some(65536) == error
            await upstream.close()
        assert server.connections == 1
    runner(main())


def test_a_provider_at_its_cap_does_not_hold_up_another_origin(runner: Runner) -> None:
    async def main() -> None:
        async def slow_stream(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n")
            await asyncio.Event().wait()
            return False

        async with Scripted(slow_stream) as slow, Scripted(reply(OK)) as healthy:
            upstream = await opened(max_connections=2, pool_timeout_ms=200)
            held = [await upstream.post(slow.url(), {}, BODY) for _ in range(2)]
            response = await upstream.post(healthy.url(), {}, BODY)
            assert await response.read() == b'{"ok":true}'
            with pytest.raises(ServiceUnavailable) as caught:  # the slow origin's own cap holds
                await upstream.post(slow.url(), {}, BODY)
            assert caught.value.reason == "pool_timeout"
            assert caught.value.headers == {"retry-after": "1"}
            assert "upstream.pool_timeout_ms" in caught.value.message
            for response in held:
                response.close()
            await upstream.close()
        assert slow.most_open == 2
    runner(main())


def test_the_first_byte_timeout_does_not_cut_a_pause_inside_the_body(runner: Runner) -> None:
    async def main() -> None:
        async def pausing(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n")
            await writer.drain()
            await asyncio.sleep(0.3)  # longer than the first-byte timeout, inside the body
            writer.write(b"2\r\ncd\r\n0\r\n\r\n")
            return True

        async with Scripted(pausing) as server:
            upstream = await opened(first_byte_timeout_ms=100, read_timeout_ms=5000)
            response = await upstream.post(server.url(), {}, BODY)
            assert await response.read() == b"abcd"
            await upstream.close()
    runner(main())


def test_requests_say_who_sends_them(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(OK)) as server:
            upstream = await opened()
            await (await upstream.post(server.url(), {}, BODY)).read()
            await upstream.close()
        head = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        agent = next(line for line in head if line.startswith(b"user-agent: "))
        assert agent.startswith(b"user-agent: affinity-gateway/")
    runner(main())


def big_garbage() -> list[Any]:
    """Objects only the cycle collector could free that hold a body's bytes."""
    gc.collect()
    return [o for o in gc.garbage if (isinstance(o, bytes | bytearray) and len(o) > 100_000)
            or (isinstance(o, list) and sum(len(p) for p in o if isinstance(p, bytes)) > 100_000)]


def test_no_failure_keeps_a_body_alive_in_a_reference_cycle(runner: Runner) -> None:
    async def main() -> None:
        async def endless(writer: asyncio.StreamWriter, nth: int) -> bool:
            await endless_chunks(writer, b"HTTP/1.1 200 OK\r\n")
            return False

        async def half_then_gone(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9999999\r\n\r\n" + b"y" * 500_000)
            await writer.drain()
            return False

        async with Scripted(endless) as first, Scripted(half_then_gone) as second:
            upstream = await opened(max_response_bytes=2 * MIB, read_timeout_ms=2000)
            for server in (first, second):
                response = await upstream.post(server.url(), {}, BODY)
                with pytest.raises(BadGateway):
                    await response.read()
                del response
            await upstream.close()

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        runner(main())
        found = big_garbage()
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert found == []
