"""The upstream client against scripted HTTP/1.1 servers on loopback, on asyncio and uvloop:
keep-alive reuse, the request it writes, bodies by length, by chunks and by close, streaming as
bytes arrive, the resend on a kept-alive connection the server dropped, timeouts, the
connection cap, TLS, and how each failure reaches the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

import pytest

from gateway.config.schema import UpstreamConfig
from gateway.errors import BadGateway, GatewayTimeout, ServiceUnavailable
from gateway.upstream import UpstreamClient
from tests.support import Runner, free_port

Answer = Callable[[asyncio.StreamWriter, int], Awaitable[bool]]  # (writer, nth on connection)
BODY = b'{"model":"m","messages":[]}'
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"


def reply(data: bytes, keep: bool = True) -> Answer:
    async def answer(writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(data)
        await writer.drain()
        return keep
    return answer


class Scripted:
    """A raw HTTP/1.1 server in the test's own loop: reads each request whole, records it, and
    lets `answer` write the response (returning False closes the connection)."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.server.close()

    def url(self, path: str = "/v1/chat/completions") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        nth = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
                body = await reader.readexactly(int(found[1]) if found else 0)
                self.requests.append(head + body)
                nth += 1
                if not await self.answer(writer, nth):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()  # the FIN is out: `open` counts it closed only now
            self.open -= 1


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until `condition()` holds; fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.001)


def client(**settings: int) -> UpstreamClient:
    return UpstreamClient(UpstreamConfig(**settings))


async def opened(**settings: int) -> UpstreamClient:
    upstream = client(**settings)
    await upstream.open()
    return upstream


def test_requests_share_one_kept_alive_connection_and_say_what_they_send(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(OK)) as server:
            upstream = await opened()
            for _ in range(5):
                response = await upstream.post(server.url("/v1/chat?x=1"),
                                               {"authorization": "Bearer sk-test"}, BODY)
                assert response.status == 200
                assert response.headers["content-type"] == "application/json"
                assert await response.read() == b'{"ok":true}'
            await upstream.close()
        assert server.connections == 1
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1/chat?x=1 HTTP/1.1"
        assert f"host: 127.0.0.1:{server.port}".encode() in lines
        assert b"Content-Length: %d" % len(BODY) in lines
        assert b"accept-encoding: identity" in lines  # bodies are scanned and passed on as sent
        assert b"authorization: Bearer sk-test" in lines
        assert body == BODY
    runner(main())


def test_a_bodyless_request_names_its_method_and_shares_the_posts_connection(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(OK)) as server:
            upstream = await opened()
            async with await upstream.request("DELETE", server.url("/v1/responses/resp_1"), {}) as deleted:
                assert deleted.status == 200 and await deleted.read() == b'{"ok":true}'
            async with await upstream.post(server.url(), {}, BODY) as posted:
                assert await posted.read() == b'{"ok":true}'
            await upstream.close()
        assert server.connections == 1
        first, second = (request.split(b"\r\n")[0] for request in server.requests)
        assert first == b"DELETE /v1/responses/resp_1 HTTP/1.1"
        assert second == b"POST /v1/chat/completions HTTP/1.1"
        assert b"Content-Length: 0" in server.requests[0]
    runner(main())


def test_a_chunked_stream_arrives_as_it_is_sent_and_the_connection_is_kept(runner: Runner) -> None:
    async def main() -> None:
        first_seen = asyncio.Event()

        async def answer(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await first_seen.wait()  # the rest only once the client has the first part
            writer.write(b"6\r\n world\r\n0\r\n\r\n")
            return True

        async with Scripted(answer) as server:
            upstream = await opened()
            response = await upstream.post(server.url(), {}, BODY)
            parts = []
            async for chunk in response.chunks():
                parts.append(chunk)
                first_seen.set()
            assert parts[0] == b"hello" and b"".join(parts) == b"hello world"
            first_seen.clear()
            again = await upstream.post(server.url(), {}, BODY)
            first_seen.set()
            assert await again.read() == b"hello world"
            await upstream.close()
        assert server.connections == 1
    runner(main())


def test_a_body_ended_by_closing_the_connection_is_whole_and_not_reused(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it",
                                  keep=False)) as server:
            upstream = await opened()
            for _ in range(2):
                response = await upstream.post(server.url(), {}, BODY)
                assert await response.read() == b"all of it"
            await upstream.close()
        assert server.connections == 2
    runner(main())


def test_a_kept_alive_connection_the_server_closed_while_idle_is_not_used_again(
    runner: Runner,
) -> None:
    async def main() -> None:
        async def answer_then_close(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(OK)  # keep-alive by its headers, then closed: a short idle timeout
            await asyncio.sleep(0.1)
            return False

        async with Scripted(answer_then_close) as server:
            upstream = await opened()
            for _ in range(2):
                response = await upstream.post(server.url(), {}, BODY)
                assert await response.read() == b'{"ok":true}'
                await until(lambda: server.open == 0)  # the FIN is on its way, maybe unread
            await upstream.close()
        assert server.connections == 2
        assert len(server.requests) == 2  # seen closed before writing: nothing was sent twice
    runner(main())


def test_a_fin_the_loop_has_not_read_yet_is_seen_on_the_socket_before_reuse(runner: Runner) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    requests: list[bytes] = []
    close_first, first_closed = threading.Event(), threading.Event()

    def serve() -> None:  # blocking sockets in a thread: the client's loop is not needed here
        for nth in range(2):
            conn, _ = listener.accept()
            data = b""
            while not data.endswith(BODY):
                data += conn.recv(65536)
            requests.append(data)
            conn.sendall(OK)
            if nth == 0:
                close_first.wait(5)
                conn.close()  # the FIN goes out while the client's loop is blocked
                first_closed.set()
            else:
                conn.recv(1)  # until the client goes
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def main() -> None:
        upstream = await opened()
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        assert await (await upstream.post(url, {}, BODY)).read() == b'{"ok":true}'
        close_first.set()
        assert first_closed.wait(5)
        time.sleep(0.1)  # idle past the poll threshold, and the loop never ran to read the FIN
        assert await (await upstream.post(url, {}, BODY)).read() == b'{"ok":true}'
        await upstream.close()

    try:
        runner(main())
        thread.join(5)
    finally:
        listener.close()
    assert len(requests) == 2  # the closed connection was seen before anything was written to it


def test_a_provider_that_reads_the_request_then_drops_the_connection_gets_it_once(
    runner: Runner,
) -> None:
    async def main() -> None:
        async def answer(writer: asyncio.StreamWriter, nth: int) -> bool:
            if nth == 2:
                await asyncio.sleep(0.05)  # read it whole, then gone without a word
                return False
            writer.write(OK)
            return True

        async with Scripted(answer) as server:
            upstream = await opened()
            for _ in range(3):
                assert await (await upstream.post(server.url(), {}, BODY)).read() == b'{"ok":true}'
                with pytest.raises(BadGateway) as caught:  # it may be billed: never twice
                    await upstream.post(server.url(), {}, BODY)
                assert caught.value.reason == "reset"
            await upstream.close()
        assert len(server.requests) == 6
    runner(main())


def test_a_kept_alive_connection_dropped_while_the_server_held_the_request_is_not_resent(
    runner: Runner,
) -> None:
    async def main() -> None:
        async def answer(writer: asyncio.StreamWriter, nth: int) -> bool:
            if nth == 2:
                await asyncio.sleep(0.4)  # working on it, past the resend window, then gone
                return False
            writer.write(OK)
            return True

        async with Scripted(answer) as server:
            upstream = await opened()
            assert await (await upstream.post(server.url(), {}, BODY)).read() == b'{"ok":true}'
            with pytest.raises(BadGateway) as caught:  # it may have started: never twice
                await upstream.post(server.url(), {}, BODY)
            assert caught.value.reason == "reset"
            await upstream.close()
        assert len(server.requests) == 2
    runner(main())


def test_a_new_connection_closed_before_the_response_is_a_502_and_not_resent(
    runner: Runner,
) -> None:
    async def main() -> None:
        async with Scripted(reply(b"", keep=False)) as server:
            upstream = await opened()
            with pytest.raises(BadGateway) as caught:
                await upstream.post(server.url(), {}, BODY)
            assert caught.value.reason == "reset"
            await upstream.close()
        assert len(server.requests) == 1
    runner(main())


def test_a_body_without_length_cut_by_a_reset_is_a_502_not_a_whole_body(runner: Runner) -> None:
    async def main() -> None:
        async def cut(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{\"half\":")
            await writer.drain()
            sock = writer.get_extra_info("socket")  # a reset (RST), not an orderly close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False

        async with Scripted(cut) as server:
            upstream = await opened()
            with pytest.raises(BadGateway):
                await (await upstream.post(server.url(), {}, BODY)).read()
            await upstream.close()
    runner(main())


def test_bytes_after_a_whole_response_cost_the_connection_not_the_response(
    runner: Runner,
) -> None:
    async def main() -> None:
        async with Scripted(reply(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno")) as server:
            upstream = await opened()
            for _ in range(2):
                assert await (await upstream.post(server.url(), {}, BODY)).read() == b'{"ok":true}'
            await upstream.close()
        assert server.connections == 2
    runner(main())


def test_a_body_left_unread_past_the_buffer_does_not_stall_the_next_request(
    runner: Runner,
) -> None:
    big = b"x" * (600 * 1024)  # past the buffer that pauses reading

    async def main() -> None:
        async with Scripted(reply(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                  % (len(big), big))) as server:
            upstream = await opened(first_byte_timeout_ms=2000)
            first = await upstream.post(server.url(), {}, BODY)
            async for _ in first.chunks():
                break  # read a little, leave the rest
            first.close()
            second = await upstream.post(server.url(), {}, BODY)
            assert await second.read() == big
            await upstream.close()
    runner(main())


def test_a_stream_closed_half_read_does_not_go_back_to_the_pool(runner: Runner) -> None:
    async def main() -> None:
        async def answer(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            return True  # the rest never comes

        async with Scripted(answer) as server:
            upstream = await opened()
            for _ in range(2):
                response = await upstream.post(server.url(), {}, BODY)
                async for chunk in response.chunks():
                    assert chunk == b"hello"
                    break
                response.close()
            await upstream.close()
        assert server.connections == 2
    runner(main())


def test_a_large_body_read_slowly_arrives_whole(runner: Runner) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, past the buffer that pauses the socket
    async def main() -> None:
        async with Scripted(reply(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                  % (len(payload), payload))) as server:
            upstream = await opened()
            response = await upstream.post(server.url(), {}, BODY)
            received = bytearray()
            async for chunk in response.chunks():
                received += chunk
                await asyncio.sleep(0)  # let the socket fill the buffer between reads
            assert bytes(received) == payload
            assert await (await upstream.post(server.url(), {}, BODY)).read() == payload
            await upstream.close()
        assert server.connections == 1
    runner(main())


def test_repeated_response_headers_are_joined_under_lower_case_names(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n"
                                  b"X-Thing: a\r\nx-thing: b\r\ncontent-length: 0\r\n\r\n")) as server:
            upstream = await opened()
            response = await upstream.post(server.url(), {}, BODY)
            assert response.status == 429
            assert response.headers["retry-after"] == "3"
            assert response.headers["x-thing"] == "a, b"
            assert await response.read() == b""
            await upstream.close()
    runner(main())


def test_interim_responses_are_skipped_for_the_real_one(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(b"HTTP/1.1 100 Continue\r\n\r\n"
                                  b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK)) as server:
            upstream = await opened()
            for _ in range(2):
                response = await upstream.post(server.url(), {}, BODY)
                assert response.status == 200 and "link" not in response.headers
                assert await response.read() == b'{"ok":true}'
            await upstream.close()
        assert server.connections == 1
    runner(main())


def test_no_headers_within_the_first_byte_timeout_is_a_504(runner: Runner) -> None:
    async def main() -> None:
        async def silent(writer: asyncio.StreamWriter, nth: int) -> bool:
            await asyncio.Event().wait()
            return False

        async with Scripted(silent) as server:
            upstream = await opened(first_byte_timeout_ms=100)
            with pytest.raises(GatewayTimeout, match=r"upstream\.first_byte_timeout_ms"):  # names its key
                await upstream.post(server.url(), {}, BODY)
            await upstream.close()
    runner(main())


def test_a_stall_mid_body_is_a_504_from_the_stream(runner: Runner) -> None:
    async def main() -> None:
        async def stall(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n")
            await asyncio.Event().wait()
            return False

        async with Scripted(stall) as server:
            upstream = await opened(read_timeout_ms=100)
            response = await upstream.post(server.url(), {}, BODY)
            received = []
            with pytest.raises(GatewayTimeout):
                async for chunk in response.chunks():
                    received.append(chunk)
            assert received == [b"ab"]
            await upstream.close()
    runner(main())


def test_the_total_timeout_bounds_a_body_that_trickles(runner: Runner) -> None:
    async def main() -> None:
        async def trickle(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            while True:
                writer.write(b"1\r\n.\r\n")
                await writer.drain()
                await asyncio.sleep(0.02)

        async with Scripted(trickle) as server:
            upstream = await opened(read_timeout_ms=1000, total_timeout_ms=300)
            response = await upstream.post(server.url(), {}, BODY)
            with pytest.raises(GatewayTimeout):
                await response.read()
            await upstream.close()
    runner(main())


def test_a_response_that_is_not_http_is_a_502(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as server:
            upstream = await opened()
            with pytest.raises(BadGateway) as caught:
                await upstream.post(server.url(), {}, BODY)
            assert caught.value.reason == "bad_response"
            await upstream.close()
    runner(main())


def test_a_refused_connection_is_a_503_the_dispatcher_may_retry(runner: Runner) -> None:
    async def main() -> None:
        upstream = await opened()
        with pytest.raises(ServiceUnavailable) as caught:
            await upstream.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", {}, BODY)
        assert caught.value.reason == "connect"
        await upstream.close()
    runner(main())


def test_the_connection_cap_holds_and_every_request_is_served(runner: Runner) -> None:
    async def main() -> None:
        async def slow(writer: asyncio.StreamWriter, nth: int) -> bool:
            await asyncio.sleep(0.01)  # keeps connections busy so requests must queue
            writer.write(OK)
            return True

        async with Scripted(slow) as server:
            upstream = await opened(max_connections=2)

            async def one() -> bytes:
                return await (await upstream.post(server.url(), {}, BODY)).read()

            assert await asyncio.gather(*(one() for _ in range(12))) == [b'{"ok":true}'] * 12
            await upstream.close()
        assert server.most_open <= 2
        assert server.connections == 2
    runner(main())


def test_at_the_cap_a_waiting_request_is_served_next_not_overtaken(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(OK)) as server:
            upstream = await opened(max_connections=1)
            served_first = 0
            hogging = True

            async def hog() -> None:  # back-to-back requests, as a busy agent loop would send
                nonlocal served_first
                while hogging:
                    await (await upstream.post(server.url(), {}, BODY)).read()
                    served_first += 1

            task = asyncio.ensure_future(hog())
            while served_first < 3:
                await asyncio.sleep(0)
            before = served_first
            assert await (await upstream.post(server.url(), {}, BODY)).read() == b'{"ok":true}'
            assert served_first - before <= 2  # handed the connection at the next release
            hogging = False
            await task
            await upstream.close()
    runner(main())


def test_a_queued_request_that_leaves_passes_its_turn_on(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(OK)) as server:
            upstream = await opened(max_connections=1)
            holding = await upstream.post(server.url(), {}, BODY)
            second = asyncio.ensure_future(upstream.post(server.url(), {}, BODY))
            third = asyncio.ensure_future(upstream.post(server.url(), {}, BODY))
            for _ in range(10):  # both queue behind the held connection
                await asyncio.sleep(0)
            assert await holding.read() == b'{"ok":true}'  # hands the connection to `second`...
            second.cancel()  # ...which leaves before it runs
            response = await asyncio.wait_for(third, 5)
            assert await response.read() == b'{"ok":true}'
            assert second.cancelled()
            await upstream.close()
        assert server.connections == 1
    runner(main())


def test_a_request_waiting_for_a_free_connection_gives_up_at_the_total_timeout(
    runner: Runner,
) -> None:
    async def main() -> None:
        async def endless(writer: asyncio.StreamWriter, nth: int) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n")
            await asyncio.Event().wait()
            return False

        async with Scripted(endless) as server:
            upstream = await opened(max_connections=1, total_timeout_ms=200)
            holding = await upstream.post(server.url(), {}, BODY)  # the only connection, open
            with pytest.raises(GatewayTimeout):
                await upstream.post(server.url(), {}, BODY)
            holding.close()
            await upstream.close()
        assert server.connections == 1 and len(server.requests) == 1
    runner(main())


def test_a_line_break_in_a_header_is_refused_without_echoing_the_value(runner: Runner) -> None:
    async def main() -> None:
        async with Scripted(reply(OK)) as server:
            upstream = await opened()
            with pytest.raises(BadGateway) as caught:
                await upstream.post(server.url(), {"authorization": "Bearer sk-secret\n"}, BODY)
            assert "sk-secret" not in str(caught.value.message)
            assert "authorization" in caught.value.message
            await upstream.close()
        assert server.requests == []
    runner(main())


def test_https_verifies_the_upstream_against_the_trusted_certificates(
    certificates: Path, runner: Runner, monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificates / "server.pem", certificates / "server.key")

    async def main() -> None:
        async with Scripted(reply(OK), tls=tls) as server:
            untrusting = await opened()
            with pytest.raises(ServiceUnavailable) as caught:
                await untrusting.post(server.url(), {}, BODY)
            assert "TLS" in caught.value.message
            await untrusting.close()
            monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))
            trusting = await opened()
            for _ in range(2):
                assert await (await trusting.post(server.url(), {}, BODY)).read() == b'{"ok":true}'
            await trusting.close()
        assert server.connections == 1  # one kept-alive connection (the refused handshake never got one)
    runner(main())
