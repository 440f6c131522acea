"""Incremental Server-Sent Events parsing and encoding.

The decoder follows the WHATWG event-stream interpretation rules: lines end with CRLF, LF or
a lone CR; a line starting with ``:`` is a comment; a field line without a colon is a field
with an empty value; one space after the colon is stripped; consecutive ``data`` lines are
joined with LF; a blank line dispatches the event, unless no ``data`` line was seen. The
``id`` and ``retry`` fields are ignored: the gateway never reconnects a stream.

The decoder survives any split of its input, including one inside a CRLF pair or inside a
UTF-8 multibyte character, because upstream bodies arrive in arbitrary network chunks.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from gateway.errors import BadGateway

__all__ = ["EventTooLarge", "SSEDecoder", "ServerSentEvent", "encode_event"]

_LINE_END = re.compile(r"\r\n|\r|\n")
_BYTES_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event; ``event`` is None when the stream named no type."""

    event: str | None
    data: str


class EventTooLarge(BadGateway):
    """One line, or one event's data, passed the decoder's limit. A BadGateway as it is: what
    the client of a translated stream is told, the stream it was reading ending with it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"upstream sent an SSE line or event larger than upstream.max_sse_event_bytes ({limit})",
            reason="too_large", code="upstream_event_too_large",
        )
        self.limit = limit


class SSEDecoder:
    """Turns a byte stream into events, one ``feed`` per network chunk. With ``max_event_size``
    (in characters) a line or an event's data past it raises `EventTooLarge`, so a stream whose
    line never ends cannot grow the decoder's memory without bound."""

    __slots__ = ("_bom_checked", "_data", "_data_size", "_event", "_limit", "_partial",
                 "_partial_size", "_skip_lf", "_text")

    def __init__(self, max_event_size: int | None = None) -> None:
        # errors="replace": a stray invalid byte must not kill a whole stream.
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._limit = max_event_size
        self._partial: list[str] = []  # the current line, not yet terminated
        self._partial_size = 0
        self._data_size = 0
        self._event: str | None = None
        self._data: list[str] = []
        # A chunk that ends in CR may be the first half of a CRLF pair.
        self._skip_lf = False
        self._bom_checked = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume one chunk and return the events it completed."""
        return self._consume(self._text.decode(chunk))

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: dispatch a pending event even without its trailing blank line."""
        events = self._consume(self._text.decode(b"", final=True))
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._line(line, events)
        self._line("", events)
        return events

    def _consume(self, text: str) -> list[ServerSentEvent]:
        if not text:
            return []
        if not self._bom_checked:
            self._bom_checked = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        events: list[ServerSentEvent] = []
        start = 0
        limit = self._limit
        for match in _LINE_END.finditer(text):
            piece = text[start : match.start()]
            if self._partial:
                self._partial.append(piece)
                piece = "".join(self._partial)
                self._partial.clear()
                self._partial_size = 0
            if limit is not None and len(piece) > limit:
                raise EventTooLarge(limit)
            self._line(piece, events)
            start = match.end()
        if start < len(text):
            self._partial.append(text[start:])
            self._partial_size += len(text) - start
            if limit is not None and self._partial_size > limit:
                self._partial.clear()  # what it held is never used; its memory goes now
                raise EventTooLarge(limit)
        elif start and text[start - 1] == "\r":
            self._skip_lf = True
        return events

    def _line(self, line: str, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data:
                events.append(ServerSentEvent(self._event, "\n".join(self._data)))
            self._event = None
            self._data = []
            self._data_size = 0
            return
        if line[0] == ":":
            return
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            if self._limit is not None:
                self._data_size += len(value) + 1
                if self._data_size > self._limit:
                    self._data = []
                    raise EventTooLarge(self._limit)
        elif field == "event":
            # An empty type means the default ("message"); None says the same thing here.
            self._event = value or None


def encode_event(data: str | bytes, event: str | None = None) -> bytes:
    """Encode one event; data holding line breaks becomes several ``data`` lines."""
    raw = data.encode() if isinstance(data, str) else data
    if event is None:
        head = b""
    elif "\n" in event or "\r" in event:
        raise ValueError("an SSE event type cannot contain a line break")
    else:
        head = b"event: " + event.encode() + b"\n"
    if b"\n" not in raw and b"\r" not in raw:
        # The common case: one JSON document, which never holds a raw line break.
        return head + b"data: " + raw + b"\n\n"
    lines = _BYTES_LINE_END.split(raw)
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
