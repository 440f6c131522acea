"""The commands the store sends, over the client `session_cache.client` names: `pipelined`
(`RespClient`, one multiplexed connection, single server only), `redis-py` (a connection pool;
Sentinel and Cluster too), or `auto`: pipelined for a single-server URL, redis-py for Sentinel
and Cluster. Both follow the same rules: the socket timeout per command, a reconnect on a
dropped connection and on a failover reply (`-READONLY`, `-LOADING`, `-MASTERDOWN`), and the
store's breaker above them."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    MasterDownError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.affinity import scripts
from gateway.affinity.resp import Address, Failover, RespClient
from gateway.config import SessionCacheConfig

SENTINEL_PORT = 26379
# URL options the pipelined client honours; any other is a config error naming it.
RESP_URL_OPTIONS = frozenset({
    "host", "port", "path", "db", "username", "password", "connection_class",
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
    "ssl_check_hostname", "ssl_password",
})


# redis-py's names for the failover replies (-READONLY, -LOADING, -MASTERDOWN).
REDIS_PY_FAILOVER = (ReadOnlyError, BusyLoadingError, MasterDownError)
AUTH_CODES = ("WRONGPASS", "NOAUTH")


def failure_kind(error: BaseException) -> str:
    """What a failed command means, from either client: `late` (no reply within the socket
    timeout), `down` (no connection, or a node that cannot serve: an outage), `auth` (the
    password or user was refused) or `command` (Redis refused this command: `-NOPERM`,
    `-WRONGTYPE`, ...; Redis is up)."""
    if isinstance(error, (TimeoutError, RedisTimeoutError)):
        return "late"
    if isinstance(error, AuthenticationError) or error_code(error) in AUTH_CODES:
        return "auth"
    if isinstance(error, (Failover, *REDIS_PY_FAILOVER)):
        return "down"
    if isinstance(error, ResponseError):
        message = str(error)
        if message.startswith("ERR AUTH") or "without any password configured" in message:
            return "auth"  # a password sent to a Redis that has none
        return "command"
    return "down"


def error_code(error: BaseException) -> str:
    """The Redis error code of an error reply (`NOPERM`, `WRONGTYPE`, ...)."""
    if isinstance(error, NoPermissionError):
        return "NOPERM"  # redis-py strips the code from the messages it maps to a class
    if isinstance(error, AuthenticationError):
        return "NOAUTH" if "required" in str(error).lower() else "WRONGPASS"
    if isinstance(error, ReadOnlyError):
        return "READONLY"
    if isinstance(error, BusyLoadingError):
        return "LOADING"
    if isinstance(error, MasterDownError):
        return "MASTERDOWN"
    message = str(error)
    if "can't run this command" in message:
        return "NOPERM"  # Redis 7's words for a command a script ran that the ACL user lacks
    word = message.split(" ", 1)[0]
    return word if word.isupper() else "ERR"


class Commands(Protocol):
    """What the store asks of Redis. Errors: `redis.exceptions.RedisError` or `OSError` (see
    `failure_kind`)."""

    # A connection pool: the store bounds concurrent calls to its size (else it runs dry).
    pooled: bool

    async def get(self, key: str) -> bytes | None: ...

    async def script(
        self, name: str, keys: tuple[str, ...], args: tuple[str | int, ...]
    ) -> Any: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


class PooledCommands:
    """redis-py's client, and the clients behind it (a Sentinel deployment's sentinels) that
    must be closed with it."""

    pooled = True

    def __init__(self, client: Redis, helpers: tuple[Redis, ...] = ()) -> None:
        self.client = client
        self.helpers = helpers
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(source) for name, source in scripts.sources().items()
        }

    async def get(self, key: str) -> bytes | None:
        try:
            return cast("bytes | None", await self.client.get(key))
        except REDIS_PY_FAILOVER:
            await self._reconnect()
            return cast("bytes | None", await self.client.get(key))

    async def script(
        self, name: str, keys: tuple[str, ...], args: tuple[str | int, ...]
    ) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=args)
        except REDIS_PY_FAILOVER:
            await self._reconnect()
            return await self._scripts[name](keys=keys, args=args)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def _reconnect(self) -> None:
        """A failover reply: the pooled connections reach a node that cannot serve us; drop them
        all, so the next command opens a fresh one (to the new primary behind the same name, or
        to the one Sentinel names now). A Cluster client follows MOVED replies itself."""
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()

    async def aclose(self) -> None:
        for client in (self.client, *self.helpers):
            await client.aclose()


def connect(cache: SessionCacheConfig) -> Commands:
    """The client `session_cache.client` names; `auto` is the pipelined client for a single
    server and redis-py for Sentinel and Cluster. ValueError: a URL the chosen client cannot
    serve (the message names the option)."""
    if chosen_client(cache) == "pipelined":
        return pipelined_client(cache)
    return PooledCommands(*redis_py(cache))


def chosen_client(cache: SessionCacheConfig) -> str:
    replicated = (cache.url or "").startswith("redis+sentinel://") or bool(cache.sentinels) or cache.cluster
    if cache.client == "auto":
        return "redis-py" if replicated else "pipelined"
    if cache.client == "pipelined" and replicated:
        raise ValueError("the pipelined client serves a single server; Sentinel and Cluster need redis-py")
    return cache.client


def pipelined_client(cache: SessionCacheConfig) -> RespClient:
    return RespClient(
        resp_address(cache.url or ""), cache.socket_timeout_ms / 1000,
        cache.connect_timeout_ms / 1000, limit=cache.pool_size, scripts=scripts.sources(),
    )


def resp_address(url: str) -> Address:
    """Where the pipelined client connects for a single-server URL (`redis://`, `rediss://`,
    `unix://`), read as redis-py reads it. An option it does not honour is an error, never a
    silent switch to another client."""
    options: Mapping[str, Any] = parse_url(url)
    unknown = sorted(options.keys() - RESP_URL_OPTIONS)
    if unknown:
        raise ValueError(
            f"the pipelined client does not support the URL option {unknown[0]!r}; "
            "set routing.session_cache.client: redis-py to use it"
        )
    context = _tls(options) if url.startswith("rediss://") else None
    return Address(
        host=options.get("host", "localhost"), port=int(options.get("port", 6379)),
        path=options.get("path"), ssl=context, username=options.get("username"),
        password=options.get("password"), db=int(options.get("db", 0)),
    )


def where(cache: SessionCacheConfig) -> str:
    """Where the store's Redis is, for log lines and errors: host:port (or the socket, or the
    sentinels), never the password."""
    url = cache.url or ""
    if url.startswith("redis+sentinel://") or cache.sentinels:
        with contextlib.suppress(ValueError):
            target = sentinel_target(url, cache.sentinels, cache.sentinel_master)
            hosts = ",".join(f"{host}:{port}" for host, port in target.addresses)
            return f"sentinel {hosts} (master {target.master})"
        return "sentinel"
    try:
        options = parse_url(url)
    except ValueError:
        return "redis"
    if options.get("path"):
        return str(options["path"])
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"


async def check(commands: Commands, prefix: str) -> None:
    """A round trip with every command the store uses, on probe keys (never a pin): a refused
    password or a missing ACL permission shows now, as the error Redis sent."""
    await commands.ping()
    probe = f"{prefix}:{{b0}}:check"
    await commands.get(probe)
    await commands.script("CHECK", (probe, f"{probe}:idx"), ())


# RedisClusterException ("cannot be connected", no node reachable) is not a RedisError.
UNAVAILABLE = (RedisError, RedisClusterException, OSError)


def _tls(options: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS context redis-py would build from the same URL options: by default the
    certificate is verified against the system's CAs (plus any given) and so is the host."""
    modes = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    mode = options.get("ssl_cert_reqs", "required")
    if mode not in modes:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(modes)}, not {mode!r}")
    context = ssl.create_default_context()
    context.check_hostname = modes[mode] != ssl.CERT_NONE and bool(
        options.get("ssl_check_hostname", True))
    context.verify_mode = modes[mode]
    if options.get("ssl_ca_certs") or options.get("ssl_ca_path"):
        context.load_verify_locations(options.get("ssl_ca_certs"), options.get("ssl_ca_path"))
    if certfile := options.get("ssl_certfile"):  # a client certificate, for mutual TLS
        context.load_cert_chain(certfile, options.get("ssl_keyfile"), options.get("ssl_password"))
    return context


def redis_py(cache: SessionCacheConfig) -> tuple[Redis, tuple[Redis, ...]]:
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
        return cast(Redis, cluster), ()  # the store's commands work the same on both
    options["retry"] = reconnect_once()
    pool = BlockingConnectionPool.from_url(
        url, max_connections=cache.pool_size, timeout=cache.socket_timeout_ms / 1000, **options
    )
    # The client owns the pool: closing it closes the connections.
    return Redis.from_pool(pool), ()


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


def _sentinel(
    cache: SessionCacheConfig, url: str, options: dict[str, Any]
) -> tuple[Redis, tuple[Redis, ...]]:
    target = sentinel_target(url, cache.sentinels, cache.sentinel_master)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.addresses), sentinel_kwargs=dict(options), password=target.password,
        db=target.db, **options,
    )
    master: Redis = sentinel.master_for(target.master, max_connections=cache.pool_size)
    return master, tuple(sentinel.sentinels)
