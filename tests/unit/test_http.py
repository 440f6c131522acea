"""Raw ASGI helpers: header lookup, bounded body reads, whole responses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from gateway.errors import ClientClosed, PayloadTooLarge
from gateway.http import header, read_body, respond, wait_for_disconnect
from gateway.types import Message


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "headers": list(headers)}


def receiver(messages: Iterable[Message]) -> Any:
    queue = iter(messages)

    async def receive() -> Message:
        return next(queue)

    return receive


def test_header_is_found_by_lower_case_name_and_decoded_as_latin_1() -> None:
    assert header(scope((b"x-a", b"1"), (b"x-b", b"caf\xe9")), b"x-b") == "café"
    assert header(scope(), b"x-a") is None


def test_body_arrives_whole_from_any_number_of_messages() -> None:
    parts = [{"type": "http.request", "body": b"ab", "more_body": True},
             {"type": "http.request", "body": b"", "more_body": True},
             {"type": "http.request", "body": b"c", "more_body": False}]
    assert asyncio.run(read_body(scope(), receiver(parts), 10)) == b"abc"


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_limit_is_a_413(declared: bool) -> None:
    headers = [(b"content-length", b"11")] if declared else []
    parts = [{"type": "http.request", "body": b"x" * 6, "more_body": True},
             {"type": "http.request", "body": b"x" * 5, "more_body": False}]
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(scope(*headers), receiver(parts), 10))


def test_a_client_that_leaves_mid_body_is_a_499() -> None:
    parts = [{"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"}]
    with pytest.raises(ClientClosed) as caught:
        asyncio.run(read_body(scope(), receiver(parts), 10))
    assert caught.value.status == 499


def test_respond_sends_the_length_and_the_extra_headers() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(respond(send, 201, b"{}", [(b"x-request-id", b"r1")]))
    assert sent[0] == {"type": "http.response.start", "status": 201, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"2"), (b"x-request-id", b"r1")]}
    assert sent[1] == {"type": "http.response.body", "body": b"{}"}


def test_wait_for_disconnect_returns_only_on_a_disconnect() -> None:
    parts = [{"type": "http.request", "body": b""}, {"type": "http.disconnect"}]
    asyncio.run(wait_for_disconnect(receiver(parts)))
