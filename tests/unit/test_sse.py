from __future__ import annotations

import pytest

from gateway.sse import EventTooLarge, ServerSentEvent, SSEDecoder, encode_event


def decode_whole(raw: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.flush()


def decode_pieces(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    return events + decoder.flush()


E = ServerSentEvent

PARSE_CASES: list[tuple[str, bytes, list[ServerSentEvent]]] = [
    ("lf", b"event: a\ndata: 1\n\n", [E("a", "1")]),
    ("crlf", b"event: a\r\ndata: 1\r\n\r\n", [E("a", "1")]),
    ("lone cr", b"event: a\rdata: 1\r\r", [E("a", "1")]),
    (
        "mixed endings",
        b"data: 1\r\n\ndata: 2\r\rdata: 3\n\r\n",
        [E(None, "1"), E(None, "2"), E(None, "3")],
    ),
    ("no event type", b"data: x\n\n", [E(None, "x")]),
    ("multi-line data", b"data: a\ndata: b\ndata:\n\n", [E(None, "a\nb\n")]),
    ("one space stripped", b"data:  two\n\n", [E(None, " two")]),
    ("no space", b"data:x\n\n", [E(None, "x")]),
    ("field without colon", b"data\n\n", [E(None, "")]),
    ("comment", b": keep-alive\n\ndata: x\n\n", [E(None, "x")]),
    ("comment inside event", b"event: a\n:hi\ndata: x\n\n", [E("a", "x")]),
    ("id and retry ignored", b"id: 7\nretry: 10\ndata: x\n\n", [E(None, "x")]),
    ("unknown field ignored", b"foo: bar\ndata: x\n\n", [E(None, "x")]),
    ("no data, no event", b"event: ping\n\n", []),
    ("event type reset", b"event: a\n\ndata: x\n\n", [E(None, "x")]),
    ("empty event type", b"event:\ndata: x\n\n", [E(None, "x")]),
    ("last event type wins", b"event: a\nevent: b\ndata: x\n\n", [E("b", "x")]),
    ("colon in value", b'data: {"a": 1}\n\n', [E(None, '{"a": 1}')]),
    ("bom", b"\xef\xbb\xbfdata: x\n\n", [E(None, "x")]),
    ("utf-8", "data: h\u00e9llo \U0001f600\n\n".encode(), [E(None, "h\u00e9llo \U0001f600")]),
    ("pending at end", b"data: a\n\ndata: tail", [E(None, "a"), E(None, "tail")]),
    ("pending with newline", b"event: e\ndata: tail\n", [E("e", "tail")]),
    ("invalid utf-8 replaced", b"data: \xff\n\n", [E(None, "\ufffd")]),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES]
)
def test_parse(raw: bytes, expected: list[ServerSentEvent]) -> None:
    assert decode_whole(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES]
)
def test_every_split_gives_the_same_events(raw: bytes, expected: list[ServerSentEvent]) -> None:
    for cut in range(len(raw) + 1):
        assert decode_pieces([raw[:cut], raw[cut:]]) == expected, cut
    assert decode_pieces([raw[i : i + 1] for i in range(len(raw))]) == expected


def test_split_inside_crlf_does_not_make_an_extra_line() -> None:
    decoder = SSEDecoder()
    # "data: a\r" + "\n" + "data: b\r\n\r\n": a CRLF split in two must be one line end,
    # otherwise the LF would count as a blank line and dispatch "a" alone.
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r\n\r\n") == [E(None, "a\nb")]


def test_events_are_returned_as_soon_as_complete() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: 2") == [E(None, "1")]
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [E(None, "2")]
    assert decoder.flush() == []


def test_bom_only_stripped_at_stream_start() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n") == [E(None, "a")]
    # Later, U+FEFF starts a line whose field name is then not "data".
    assert decoder.feed(b"\xef\xbb\xbfdata: b\n\n") == []


def test_multibyte_character_split_across_chunks() -> None:
    raw = "data: \u20ac\n\n".encode()
    decoder = SSEDecoder()
    assert decoder.feed(raw[:7]) == []
    assert decoder.feed(raw[7:]) == [E(None, "\u20ac")]


def test_truncated_multibyte_at_end_is_replaced() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: \xe2\x82") == []
    assert decoder.flush() == [E(None, "\ufffd")]


def test_long_line_in_many_chunks() -> None:
    payload = "x" * 10_000
    raw = f"data: {payload}\n\n".encode()
    assert decode_pieces([raw[i : i + 7] for i in range(0, len(raw), 7)]) == [E(None, payload)]


ENCODE_CASES: list[tuple[str | bytes, str | None, bytes]] = [
    ('{"a":1}', None, b'data: {"a":1}\n\n'),
    (b'{"a":1}', "message_start", b'event: message_start\ndata: {"a":1}\n\n'),
    ("[DONE]", None, b"data: [DONE]\n\n"),
    ("", None, b"data: \n\n"),
    ("a\nb", None, b"data: a\ndata: b\n\n"),
    ("a\r\nb\rc", "e", b"event: e\ndata: a\ndata: b\ndata: c\n\n"),
    ("a\n", None, b"data: a\ndata: \n\n"),
    (" lead", None, b"data:  lead\n\n"),
]


@pytest.mark.parametrize(("data", "event", "expected"), ENCODE_CASES)
def test_encode(data: str | bytes, event: str | None, expected: bytes) -> None:
    assert encode_event(data, event) == expected


@pytest.mark.parametrize(
    "data", ["plain", "", "two\nlines", "\n", "x\n\ny", " space", ":colon", "\u00e9\U0001f600"]
)
@pytest.mark.parametrize("event", [None, "delta"])
def test_encode_then_decode_round_trips(data: str, event: str | None) -> None:
    assert decode_whole(encode_event(data, event)) == [E(event, data)]


def test_encode_normalises_line_breaks_to_lf() -> None:
    assert decode_whole(encode_event("a\r\nb\rc")) == [E(None, "a\nb\nc")]


def test_encode_rejects_event_type_with_line_break() -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_event("x", "a\nb")


def test_a_line_that_never_ends_is_cut_at_the_limit_whatever_the_chunks() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    assert decoder.feed(b"data: ok\n\ndata: ") == [ServerSentEvent(None, "ok")]
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            decoder.feed(b"x" * 37)


def test_an_event_of_many_short_data_lines_is_cut_at_the_limit() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: 0123456789\n" * 200)


def test_events_within_the_limit_pass_however_split() -> None:
    raw = b"event: a\r\ndata: " + b"y" * 900 + b"\r\n\r\n" + b"data: z\n\n"
    for size in (1, 7, 64, len(raw)):
        decoder = SSEDecoder(max_event_size=1000)
        events = [e for i in range(0, len(raw), size) for e in decoder.feed(raw[i : i + size])]
        assert events == [ServerSentEvent("a", "y" * 900), ServerSentEvent(None, "z")]
