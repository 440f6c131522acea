"""The affinity store at start: a refused password or ACL permission, or a URL the chosen
client cannot serve, is a config error (StoreRejected: `serve` exits with its one line); an
unreachable Redis is not (the store warns and starts fail-open)."""

from __future__ import annotations

from redis.exceptions import RedisClusterException, ResponseError

from gateway.affinity.base import StoreRejected
from gateway.affinity.connection import UNAVAILABLE, Commands, check, connect, error_code, failure_kind, where
from gateway.config import RoutingConfig, SessionCacheConfig


def reason(error: BaseException) -> str:
    """An error for a log line: Redis's own text for a reply (it never holds the password),
    else the exception's type and text."""
    text = str(error).strip()
    if isinstance(error, ResponseError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def connect_or_reject(cache: SessionCacheConfig) -> Commands:
    """The store's client for the URL, or StoreRejected naming what in it no client can serve
    (a port out of range, an option the chosen client lacks, a TLS file that is not there)."""
    try:
        return connect(cache)
    except ValueError as exc:
        raise StoreRejected(f"routing.session_cache.url: {exc}") from None
    except OSError as exc:  # ssl_ca_certs, ssl_certfile: read when the client is made
        raise StoreRejected(
            f"routing.session_cache.url: cannot read {exc.filename or 'a TLS file'} named there: "
            f"{exc.strerror}") from None
    except RedisClusterException as exc:  # e.g. a unix socket with cluster: true
        raise StoreRejected(f"routing.session_cache: {exc}") from None


async def verify(commands: Commands, prefix: str, address: str) -> BaseException | None:
    """Raise StoreRejected when Redis refuses the gateway's credentials or a command the store
    needs; return the error when Redis is unreachable, None when all is well."""
    try:
        await check(commands, prefix)
    except UNAVAILABLE as exc:
        kind = failure_kind(exc)
        if kind == "auth":
            raise StoreRejected(
                f"routing.session_cache: Redis at {address} rejected the gateway's credentials "
                f"({reason(exc)}); check the password (and user) in the URL"
            ) from None
        if kind == "command":
            if error_code(exc) != "NOPERM":
                return None  # Redis is up (full, say): logged when a request meets it
            raise StoreRejected(
                f"routing.session_cache: the Redis user lacks a permission the affinity store "
                f"needs ({reason(exc)}); it needs GET, EVALSHA, EVAL and the commands its "
                f"scripts run (gateway/affinity/scripts.py) on the keys {prefix}:*"
            ) from None
        return exc
    return None


async def preflight(routing: RoutingConfig) -> None:
    """At `serve`, before any worker starts: a refused password or permission raises
    StoreRejected; an unreachable Redis is left to the workers (they warn and fail open)."""
    cache = routing.session_cache
    if cache.type != "redis":
        return
    commands = connect_or_reject(cache)
    try:
        await verify(commands, cache.key_prefix, where(cache))
    finally:
        await commands.aclose()
