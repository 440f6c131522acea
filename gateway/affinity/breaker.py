"""A circuit breaker so a dead Redis costs one timeout per probe, not one per request."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delays: base, 2x base, ... capped."""

    base: float
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * (2 ** max(0, failures - 1))))


@dataclass(frozen=True, slots=True)
class Trip:
    """When late replies open the breaker: at least `min_failures` of them within `window_s`,
    and at least `rate` of the calls in that window. One slow reply (a Redis busy for a second
    with a big command, a fork, an fsync) is not an outage; a Redis that answers nothing is."""

    window_s: float = 10.0
    min_failures: int = 10
    rate: float = 0.5


class CircuitBreaker:
    """Closed: every call goes through. Open: calls are refused until the next probe time, when
    exactly one caller is let through; its success closes the breaker, its failure backs off.

    Two kinds of failure: `failure(hard=True)` is an outage beyond doubt (the connection was
    refused or lost and could not be reopened, Redis answered that it cannot serve): it opens
    the breaker at once. `failure(hard=False)` is a late reply: it fails its own call only and
    opens the breaker when late replies pass the `Trip` rate.

    Only the failure that opens the breaker and failures of probes count toward the backoff:
    when Redis dies under load every in-flight call fails at once, and counting each of them
    would push the next probe to the backoff cap instead of one base delay away.
    """

    def __init__(
        self, backoff: Backoff, trip: Trip = Trip(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backoff = backoff
        self.trip = trip
        self.clock = clock
        self.failures = 0
        self._next_probe = 0.0
        self._probing = False
        # Calls per second of the window: [second, calls, late replies], oldest first.
        self._seconds: deque[list[int]] = deque()

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
        """Count the call; close the breaker. True when it was open (the caller may resynchronise)."""
        self._second()[1] += 1
        if self.failures == 0:
            return False
        self.failures = 0
        self._probing = False
        self._seconds.clear()
        return True

    def failure(self, hard: bool = True) -> bool:
        """Count a failed call; True when this failure opened the breaker."""
        if self.failures > 0 and not self._probing:
            return False  # a call that started before the breaker opened: already accounted for
        if not hard and self.failures == 0:
            second = self._second()
            second[1] += 1
            second[2] += 1
            calls = late = 0
            for _, count, failed in self._seconds:
                calls += count
                late += failed
            if late < self.trip.min_failures or late < self.trip.rate * calls:
                return False
        self.failures += 1
        self._probing = False
        self._next_probe = self.clock() + self.backoff.delay(self.failures)
        return self.failures == 1

    def _second(self) -> list[int]:
        """This second's counts, dropping seconds that left the window."""
        now = int(self.clock())
        seconds = self._seconds
        if seconds and seconds[-1][0] == now:
            return seconds[-1]
        while seconds and seconds[0][0] <= now - self.trip.window_s:
            seconds.popleft()
        current = [now, 0, 0]
        seconds.append(current)
        return current
