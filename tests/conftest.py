"""Fixtures every level shares: a private redis-server and the simulator as the upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.simulator import SimulatorSettings, create_simulator_app
from tests.support import RedisServer, ThreadServer, serve


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def killable_redis() -> Iterator[RedisServer]:
    """A private server for one test alone: it may be killed and restarted on its port."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the private server for each test."""
    redis_server.command("FLUSHALL")
    return redis_server.url


@pytest.fixture(scope="session")
def simulator() -> Iterator[ThreadServer]:
    with serve(create_simulator_app(SimulatorSettings())) as server:
        yield server
