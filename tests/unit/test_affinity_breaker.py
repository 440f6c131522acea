"""The circuit breaker with an injected clock: probes, backoff doubling, closing on success."""

from __future__ import annotations

from gateway.affinity.breaker import Backoff, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def breaker(base: float = 1.0, cap: float = 30.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(Backoff(base, cap), clock=clock), clock


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(0.5, cap=3.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.delay(0) == 0.5


def test_closed_breaker_lets_everything_through() -> None:
    cb, _ = breaker()
    assert not cb.open
    assert all(cb.allow() for _ in range(100))


def test_failure_opens_and_refuses_until_the_probe_time() -> None:
    cb, clock = breaker(base=1.0)
    cb.failure()
    assert cb.open
    assert not cb.allow()
    clock.now += 0.99
    assert not cb.allow()
    clock.now += 0.01
    assert cb.allow()  # the probe
    assert not cb.allow()  # only one caller probes at a time
    assert not cb.allow()


def test_failed_probes_double_the_delay() -> None:
    cb, clock = breaker(base=1.0, cap=4.0)
    cb.failure()
    waits = []
    for _ in range(5):
        started = clock.now
        while not cb.allow():
            clock.now += 0.125
        waits.append(clock.now - started)
        cb.failure()  # the probe failed
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert cb.open


def test_successful_probe_closes() -> None:
    cb, clock = breaker(base=1.0)
    cb.failure()
    clock.now += 1
    assert cb.allow()
    assert cb.success() is True  # it was open: the caller may resynchronise
    assert not cb.open
    assert cb.allow() and cb.allow()
    assert cb.success() is False  # already closed


def test_a_burst_of_failures_counts_once() -> None:
    """Redis dies under load: every in-flight call fails, but the next probe is one base delay
    away, not pushed to the cap."""
    cb, clock = breaker(base=1.0)
    for _ in range(50):
        cb.failure()
    assert cb.failures == 1
    clock.now += 1
    assert cb.allow()


def test_after_closing_the_backoff_starts_over() -> None:
    cb, clock = breaker(base=1.0)
    cb.failure()
    for _ in range(3):  # three failed probes: the delay has grown to 8
        clock.now += 100
        assert cb.allow()
        cb.failure()
    clock.now += 100
    assert cb.allow()
    cb.success()
    cb.failure()
    clock.now += 1
    assert cb.allow()


def test_a_probe_that_never_reports_lets_another_try_later() -> None:
    cb, clock = breaker(base=1.0)
    cb.failure()
    clock.now += 1
    assert cb.allow()  # this probe hangs and never reports
    clock.now += 0.5
    assert not cb.allow()
    clock.now += 0.5
    assert cb.allow()


def test_one_late_reply_does_not_open_it_a_rate_of_them_does() -> None:
    cb, clock = breaker()
    for _ in range(100):
        cb.success()
    for _ in range(9):  # a stall: nine late replies at once
        assert not cb.failure(hard=False)
    assert not cb.open
    for _ in range(50):  # then replies in time again: 9 of 159 calls were late
        cb.success()
        clock.now += 0.1
    assert not cb.failure(hard=False)  # ten late, but not half the calls
    assert not cb.open
    clock.now += 11  # the window moved on: only what comes now counts
    opened = [cb.failure(hard=False) for _ in range(10)]
    assert opened == [False] * 9 + [True] and cb.open


def test_a_lost_connection_opens_it_at_once() -> None:
    cb, _ = breaker()
    for _ in range(1000):
        cb.success()
    assert cb.failure(hard=True)
    assert cb.open and not cb.allow()
