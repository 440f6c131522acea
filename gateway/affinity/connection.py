"""Building the Redis client for a single server, Sentinel, or Cluster."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from gateway.config import SessionCacheConfig


def connect(cache: SessionCacheConfig) -> Redis:
    options: dict[str, Any] = {
        "socket_timeout": cache.socket_timeout_ms / 1000,
        "socket_connect_timeout": cache.connect_timeout_ms / 1000,
        # Check connections that sat idle, so ones a proxy or Redis dropped are replaced, not failed.
        "health_check_interval": 15,
    }
    url = cache.url or ""
    if url.startswith("redis+sentinel://") or cache.sentinels:
        return _sentinel(cache, url, options)
    if cache.cluster:
        cluster = cast(Redis, RedisCluster.from_url(url, max_connections=cache.pool_size, **options))
        return cluster  # same command surface as Redis for what the store uses
    pool = BlockingConnectionPool.from_url(
        url, max_connections=cache.pool_size, timeout=cache.socket_timeout_ms / 1000, **options
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections


def _sentinel(cache: SessionCacheConfig, url: str, options: dict[str, Any]) -> Redis:
    """`redis+sentinel://[:password@]host:port,host:port/master_name[/db]` or the sentinel block."""
    hosts = list(cache.sentinels)
    master = cache.sentinel_master
    password = None
    db = 0
    if url:
        parts = urlsplit(url.replace("redis+sentinel://", "sentinel://", 1))
        netloc = parts.netloc
        if "@" in netloc:
            credentials, netloc = netloc.rsplit("@", 1)
            password = unquote(credentials.split(":", 1)[-1]) or None
        hosts = hosts or netloc.split(",")
        path = [segment for segment in parts.path.split("/") if segment]
        master = master or (path[0] if path else "mymaster")
        db = int(path[1]) if len(path) > 1 else 0
    addresses = []
    for host in hosts:
        name, _, port = host.rpartition(":")
        addresses.append((name or host, int(port or 26379)))
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        addresses, sentinel_kwargs=dict(options), password=password, db=db, **options
    )
    master_client: Redis = sentinel.master_for(master or "mymaster", max_connections=cache.pool_size)
    return master_client
