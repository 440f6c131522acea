"""Egress through an HTTP proxy: which requests take one (NO_PROXY rules as curl and httpx read
them), CONNECT tunnels for TLS, and the Proxy-Authorization built from the proxy URL.

A proxy's user and password never appear in an error or a log line: errors name the proxy by
host and port only.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from gateway.config import ProxyConfig
from gateway.errors import BadGateway, ServiceUnavailable

MAX_CONNECT_RESPONSE = 16 * 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # the Proxy-Authorization value

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """An http:// proxy URL as the config loader validated it."""
        parts = urlsplit(url)
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return cls(parts.hostname or "", parts.port or 80, authorization)

    @property
    def name(self) -> str:
        """How errors name the proxy: never with its credentials."""
        return f"egress proxy {self.host}:{self.port}"


class Proxies:
    """The proxy decision for each target, from the resolved config."""

    def __init__(self, config: ProxyConfig) -> None:
        self._by_scheme = {scheme: Proxy.parse(url) for scheme, url in
                           (("http", config.http), ("https", config.https)) if url}
        self._bypass = [_Rule.parse(entry) for entry in config.no_proxy]

    def for_target(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self._by_scheme.get(scheme)
        if proxy is None or any(rule.matches(host, port) for rule in self._bypass):
            return None
        return proxy


@dataclass(frozen=True, slots=True)
class _Rule:
    """One NO_PROXY entry: `*`, a host or domain (`example.com` and `.example.com` both cover
    subdomains), an IP address or CIDR block, each with an optional `:port`."""

    host: str
    port: int | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None

    @classmethod
    def parse(cls, entry: str) -> _Rule:
        text = entry.strip().lower()
        port = None
        if text.startswith("["):  # [::1]:8080
            close = text.find("]")
            host, rest = text[1:close], text[close + 1 :]
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = int(port_text) if port_text.isdigit() else None
        else:
            host = text
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            network = None
        return cls(host.lstrip("*").lstrip(".") if host != "*" else "*", port, network)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        host = host.lower().strip("[]")
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host == self.host or host.endswith("." + self.host)


class _TunnelReply(asyncio.Protocol):
    """Collects the proxy's answer to CONNECT (a status line and headers, nothing more)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.data = bytearray()
        self.done: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data or len(self.data) > MAX_CONNECT_RESPONSE:
            if not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def open_tunnel(
    loop: asyncio.AbstractEventLoop, proxy: Proxy, host: str, port: int
) -> asyncio.Transport:
    """A TCP connection to `proxy` that CONNECT turned into a tunnel to host:port (the caller
    starts TLS over it). Raises ServiceUnavailable when no tunnel was made: nothing of the
    request has been sent, so the dispatcher may retry as for any connect error."""
    try:
        transport, reply = await loop.create_connection(lambda: _TunnelReply(loop), proxy.host, proxy.port)
    except OSError:
        raise ServiceUnavailable(f"{proxy.name} unreachable: connection failed", reason="connect") from None
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n"
    if proxy.authorization:
        request += f"proxy-authorization: {proxy.authorization}\r\n"
    try:
        transport.write((request + "\r\n").encode("latin-1"))
        await reply.done
    except BaseException:
        transport.abort()
        raise
    status_line = bytes(reply.data).split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    if not 200 <= status < 300 or not reply.data.endswith(b"\r\n\r\n"):
        transport.abort()
        if status == 407:
            raise BadGateway(f"{proxy.name} refused the proxy credentials (407)", reason="proxy")
        if status:
            raise ServiceUnavailable(f"{proxy.name} refused a tunnel to {authority} with {status}",
                                     reason="connect")
        raise ServiceUnavailable(f"{proxy.name} closed the connection before a tunnel was made",
                                 reason="connect")
    return transport
