"""A circuit breaker so a dead Redis costs one timeout per probe, not one per request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delays: base, 2x base, ... capped."""

    base: float
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * (2 ** max(0, failures - 1))))


class CircuitBreaker:
    """Closed: every call goes through. Open: calls are refused until the next probe time, when
    exactly one caller is let through; its success closes the breaker, its failure backs off.

    Only the failure that opens the breaker and failures of probes count toward the backoff:
    when Redis dies under load every in-flight call fails at once, and counting each of them
    would push the next probe to the backoff cap instead of one base delay away.
    """

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self.clock = clock
        self.failures = 0
        self._next_probe = 0.0
        self._probing = False

    @property
    def open(self) -> bool:
        return self.failures > 0

    def allow(self) -> bool:
        if self.failures == 0:
            return True
        now = self.clock()
        if now < self._next_probe:
            return False
        # Let this caller probe; if it never reports, another may try one delay later.
        self._probing = True
        self._next_probe = now + self.backoff.delay(self.failures)
        return True

    def success(self) -> bool:
        """Close the breaker; True when it was open (the caller may resynchronise)."""
        was_open = self.failures > 0
        self.failures = 0
        self._probing = False
        return was_open

    def failure(self) -> None:
        if self.failures > 0 and not self._probing:
            return  # a call that started before the breaker opened: already accounted for
        self.failures += 1
        self._probing = False
        self._next_probe = self.clock() + self.backoff.delay(self.failures)
