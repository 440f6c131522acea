"""One recorded exchange: the request a harness sent and what came back, secrets masked.

The front (and the Responses stub) write one JSON file per request into the capture directory,
numbered in arrival order, so a run can be read back, summarised and turned into fixtures.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Header names whose values are credentials; anything naming a key, token or secret too.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})
_SECRET_WORDS = ("key", "token", "secret", "password")
MASK = "***"


def mask_header(name: str, value: str) -> str:
    lower = name.lower()
    if lower in _SECRET_HEADERS or any(word in lower for word in _SECRET_WORDS):
        scheme, _, rest = value.partition(" ")
        return f"{scheme} {MASK}" if rest and scheme.lower() in ("bearer", "basic") else MASK
    return value


def masked(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names (as ASGI servers give them), secrets replaced; repeated names joined."""
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        value = mask_header(lower, value)
        out[lower] = f"{out[lower]}, {value}" if lower in out else value
    return out


def parse_body(raw: bytes) -> Any:
    """JSON when it is JSON, else the text (or None for an empty body)."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"_text": raw[:4096].decode("utf-8", "replace")}


@dataclass
class Usage:
    """Prompt tokens and how many of them the provider said came from its prompt cache."""

    prompt: int = 0
    cached: int = 0


@dataclass
class Exchange:
    seq: int
    harness: str  # which scripted session sent it (claude-code, codex, codex-capture)
    target: str  # gateway (through the front), simulator (--direct), stub (Responses capture stub)
    replica: int | None  # which gateway replica the front sent it to
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    usage: Usage | None = None
    answer: str | None = None  # the start of the response body when it is not a 2xx
    error: str | None = None  # the front's own failure to reach a replica

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Exchange:
        fields = dict(data)
        usage = fields.pop("usage", None)
        return cls(**fields, usage=Usage(**usage) if usage else None)


class Recorder:
    """Numbers exchanges and writes each to `<dir>/<seq>-<harness>.json` once it is complete."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.harness = "unlabelled"  # set by the run before each scripted session
        self._lock = threading.Lock()
        self._seq = 0

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def write(self, exchange: Exchange) -> None:
        path = self.directory / f"{exchange.seq:05d}-{exchange.harness}.json"
        path.write_text(json.dumps(exchange.to_json(), indent=1, ensure_ascii=False))


def load(directory: Path) -> list[Exchange]:
    return [
        Exchange.from_json(json.loads(path.read_text()))
        for path in sorted(directory.glob("*.json"))
    ]
