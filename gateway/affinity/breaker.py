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
    exactly one caller is let through; its success closes the breaker, its failure backs off."""

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self.clock = clock
        self.failures = 0
        self._next_probe = 0.0

    @property
    def open(self) -> bool:
        return self.failures > 0

    def allow(self) -> bool:
        if self.failures == 0:
            return True
        now = self.clock()
        if now < self._next_probe:
            return False
        # Let this caller probe; others wait for the verdict until the probe could have timed out.
        self._next_probe = now + self.backoff.delay(self.failures)
        return True

    def success(self) -> None:
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        self._next_probe = self.clock() + self.backoff.delay(self.failures)
