"""What routers see (turns of text) and what they say (a route name, or none)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Source = Literal["router", "affinity", "fallback"]

# Routers read the newest part of a turn; very long tool results add cost, not signal.
MAX_TURN_CHARS = 8000


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # system | user | assistant | tool
    text: str


@dataclass(frozen=True, slots=True)
class RouteChoice:
    route: str | None
    source: Source = "router"  # "fallback" when the configured router failed and builtin answered


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request: the route, the ranked models (first is served), and why."""

    route: str | None
    models: tuple[str, ...]
    source: Source

    @property
    def model(self) -> str:
        return self.models[0]


class Router(Protocol):
    name: str

    async def choose(self, turns: list[Turn]) -> RouteChoice: ...

    async def close(self) -> None: ...


def latest_turn_text(turns: list[Turn]) -> str:
    """The last user message and any tool results after it (the part that states intent now)."""
    parts: list[str] = []
    for turn in reversed(turns):
        if turn.role == "tool":
            parts.append(turn.text)
        elif turn.role == "user":
            parts.append(turn.text)
            break
    text = "\n".join(reversed(parts))
    return text[-MAX_TURN_CHARS:]
