"""The resolved configuration: frozen, typed objects built once by `loader.load_config`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ProviderInterface = Literal["openai", "anthropic"]
RouterType = Literal["builtin", "llm"]
PinnedFailure = Literal["error", "reroute"]
# Read-only endpoints `auth.protect` can put behind a key (open by default).
ProtectedEndpoint = Literal["metrics", "models", "openapi"]


@dataclass(frozen=True, slots=True)
class ModelProvider:
    """One upstream model: `model` is the full `provider/id` name it is addressed by."""

    model: str
    provider: str
    model_id: str
    interface: ProviderInterface
    api_base: str  # ends at the API version root, e.g. https://api.openai.com/v1
    access_key: str | None = field(default=None, repr=False)
    default: bool = False


@dataclass(frozen=True, slots=True)
class RoutingPreference:
    name: str
    description: str
    examples: tuple[str, ...]
    models: tuple[str, ...]  # full model names, ranked


@dataclass(frozen=True, slots=True)
class RouterConfig:
    type: RouterType = "builtin"
    threshold: float = 0.2
    model: str | None = None  # the llm router's model (a configured provider)
    timeout_ms: int = 300


@dataclass(frozen=True, slots=True)
class SessionCacheConfig:
    type: Literal["memory", "redis"] = "memory"
    url: str | None = field(default=None, repr=False)
    tenant_header: str | None = None
    key_prefix: str = "agw"
    cluster: bool = False
    sentinel_master: str | None = None
    sentinels: tuple[str, ...] = ()
    socket_timeout_ms: int = 250
    connect_timeout_ms: int = 500
    # Single server: commands in flight on the one pipelined connection; Sentinel/Cluster: pool size.
    pool_size: int = 64
    local_cache_entries: int = 10_000
    breaker_cooldown_ms: int = 1000


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    router: RouterConfig = RouterConfig()
    session_ttl_seconds: int = 600
    session_max_entries: int = 10_000
    session_ttl_refresh: bool = False
    on_pinned_failure: PinnedFailure = "error"
    session_cache: SessionCacheConfig = SessionCacheConfig()


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    connect_timeout_ms: int = 3000
    first_byte_timeout_ms: int = 60_000
    total_timeout_ms: int = 600_000
    max_retries: int = 2
    retry_backoff_ms: int = 100
    max_connections: int = 1000


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 64 * 1024  # the request head, enforced while it is read (gateway/server.py)
    max_header_count: int = 100
    header_timeout_seconds: float = 10.0  # from a request's first byte (or the connection's opening)
    body_timeout_seconds: float = 60.0  # from the end of the head to the end of the body
    max_messages: int = 10_000
    max_concurrent_per_tenant: int = 0  # 0: no cap


@dataclass(frozen=True, slots=True)
class AuthKey:
    key: str = field(repr=False)
    tenant: str


@dataclass(frozen=True, slots=True)
class AuthConfig:
    keys: tuple[AuthKey, ...] = ()
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    protect: tuple[ProtectedEndpoint, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.keys or self.admin_keys)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: Literal["auto", "json", "text"] = "auto"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 12000
    drain_timeout_seconds: int = 25
    max_connections: int = 4096  # per replica, shared among its worker processes; 503 beyond


@dataclass(frozen=True, slots=True)
class Config:
    version: str
    providers: tuple[ModelProvider, ...]
    preferences: tuple[RoutingPreference, ...]
    aliases: Mapping[str, str]  # alias -> full model name
    models: Mapping[str, ModelProvider]  # every accepted name (full, unambiguous bare id) -> provider
    default_model: str
    routing: RoutingConfig = RoutingConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    limits: LimitsConfig = LimitsConfig()
    auth: AuthConfig = AuthConfig()
    logging: LoggingConfig = LoggingConfig()
    server: ServerConfig = ServerConfig()
    metrics_enabled: bool = True
    warnings: tuple[str, ...] = ()

    def resolve(self, name: str) -> ModelProvider | None:
        """The provider for a model name, bare id or alias; None if it is not configured."""
        provider = self.models.get(name)
        if provider is None and name in self.aliases:
            provider = self.models.get(self.aliases[name])
        return provider

    def preference(self, name: str) -> RoutingPreference | None:
        for preference in self.preferences:
            if preference.name == name:
                return preference
        return None
