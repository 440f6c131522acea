"""Building the Redis client for a single server, Sentinel, or Cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config import SessionCacheConfig

SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class Connection:
    """The client the store talks to, and the clients behind it (a Sentinel deployment's
    sentinels) that must be closed with it."""

    client: Redis
    helpers: tuple[Redis, ...] = ()

    async def aclose(self) -> None:
        for client in (self.client, *self.helpers):
            await client.aclose()


def connect(cache: SessionCacheConfig) -> Connection:
    options: dict[str, Any] = {
        "socket_timeout": cache.socket_timeout_ms / 1000,
        "socket_connect_timeout": cache.connect_timeout_ms / 1000,
        # Check connections that sat idle, so ones a proxy or Redis dropped are replaced.
        "health_check_interval": 15,
    }
    url = cache.url or ""
    if url.startswith("redis+sentinel://") or cache.sentinels:
        return _sentinel(cache, url, {**options, "retry": reconnect_once()})
    if cache.cluster:
        cluster = RedisCluster.from_url(url, max_connections=cache.pool_size, **options)
        return Connection(cast(Redis, cluster))  # the store's commands work the same on both
    options["retry"] = reconnect_once()
    pool = BlockingConnectionPool.from_url(
        url, max_connections=cache.pool_size, timeout=cache.socket_timeout_ms / 1000, **options
    )
    # The client owns the pool: closing it closes the connections.
    return Connection(Redis.from_pool(pool))


def reconnect_once() -> Retry:
    """One immediate retry on a fresh connection when the pooled one turns out dead (Redis's
    `timeout`, CLIENT KILL, a proxy's idle cut). Timeouts are not retried: a hung Redis should
    cost one socket timeout, after which the breaker takes over."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    addresses: tuple[tuple[str, int], ...]
    master: str
    password: str | None = None
    db: int = 0


def sentinel_target(
    url: str, sentinels: tuple[str, ...] = (), master: str | None = None
) -> SentinelTarget:
    """`redis+sentinel://[:password@]host:port,host:port/master_name[/db]`, with the config's
    sentinel list and master name taking precedence over the URL's."""
    hosts = list(sentinels)
    password = None
    db = 0
    if url:
        rest = url.split("://", 1)[-1]
        netloc, _, path = rest.partition("/")
        if "@" in netloc:
            credentials, netloc = netloc.rsplit("@", 1)
            password = unquote(credentials.split(":", 1)[-1]) or None
        hosts = hosts or [host for host in netloc.split(",") if host.strip()]
        segments = [segment for segment in path.split("?")[0].split("/") if segment]
        master = master or (unquote(segments[0]) if segments else None)
        db = int(segments[1]) if len(segments) > 1 else 0
    if not hosts:
        raise ValueError("a Sentinel deployment needs at least one sentinel host")
    addresses = tuple(_address(host.strip()) for host in hosts)
    return SentinelTarget(addresses, master or "mymaster", password, db)


def _address(host: str) -> tuple[str, int]:
    if host.startswith("["):  # [ipv6] or [ipv6]:port
        name, _, port = host[1:].partition("]")
        return name, int(port.lstrip(":") or SENTINEL_PORT)
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, int(port or SENTINEL_PORT)
    return host, SENTINEL_PORT  # a bare name, or a bare IPv6 address


def _sentinel(cache: SessionCacheConfig, url: str, options: dict[str, Any]) -> Connection:
    target = sentinel_target(url, cache.sentinels, cache.sentinel_master)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.addresses), sentinel_kwargs=dict(options), password=target.password,
        db=target.db, **options,
    )
    master: Redis = sentinel.master_for(target.master, max_connections=cache.pool_size)
    return Connection(master, tuple(sentinel.sentinels))
