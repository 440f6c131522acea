"""A circuit breaker so a dead Redis costs one timeout per probe, not one per request."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Every this-many-plus-one calls (a mask), a success reads the clock for the rate's marks.
MARK_EVERY = 63


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
        # The call rate without a clock read per call: a running count, and (time, count) marks
        # taken at most once a second, every MARK_EVERY calls and at each late reply.
        self.calls = 0
        self._marks: deque[tuple[float, int]] = deque()
        self._late: deque[float] = deque()  # when late replies came, within the window

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
        self.calls += 1
        if not self.calls & MARK_EVERY:
            self._mark(self.clock())
        if self.failures == 0:
            return False
        self.failures = 0
        self._probing = False
        self._late.clear()
        return True

    def failure(self, hard: bool = True) -> bool:
        """Count a failed call; True when this failure opened the breaker."""
        if self.failures > 0 and not self._probing:
            return False  # a call that started before the breaker opened: already accounted for
        if not hard and self.failures == 0 and not self._tripped():
            return False
        self.failures += 1
        self._probing = False
        self._next_probe = self.clock() + self.backoff.delay(self.failures)
        return self.failures == 1

    def _tripped(self) -> bool:
        """Count a late reply; True when late replies pass the `Trip` rate."""
        self.calls += 1
        now = self.clock()
        self._mark(now)
        late = self._late
        late.append(now)
        while late[0] <= now - self.trip.window_s:
            late.popleft()
        calls = self.calls - self._marks[0][1]  # since the window began (give or take a second)
        return len(late) >= self.trip.min_failures and len(late) >= self.trip.rate * calls

    def _mark(self, now: float) -> None:
        marks = self._marks
        if marks and now - marks[-1][0] < 1.0:
            return
        marks.append((now, self.calls))
        # Keep the last mark at or before the window's start: the count the window starts from.
        while len(marks) > 1 and marks[1][0] <= now - self.trip.window_s:
            marks.popleft()
