"""The resolved configuration: frozen, typed objects built once by `loader.load_config`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

ProviderInterface = Literal["openai", "anthropic"]
ResponsesMode = Literal["native", "translate"]
RouterType = Literal["builtin", "llm"]
RedisClient = Literal["auto", "pipelined", "redis-py"]
PinnedFailure = Literal["error", "reroute"]
UnknownModel = Literal["reject", "default"]

# What a wildcard passes through: model names as providers spell them, nothing that could
# smuggle a path or a header into the upstream request.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}")


def is_model_name(name: str) -> bool:
    return _MODEL_NAME.fullmatch(name) is not None
TracingProtocol = Literal["http/protobuf", "grpc"]
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
    # How /v1/responses reaches an OpenAI-kind provider: its own /responses, or Chat Completions.
    responses: ResponsesMode = "translate"
    # A wildcard (`anthropic/*`) serves any model of its provider by passing the name through;
    # bare names starting with one of `model_prefixes` (`claude-`) reach it too.
    model_prefixes: tuple[str, ...] = ()
    # The most tokens an answer of this model may have: a request asking for more is lowered
    # to it on the way (None: sent as asked).
    max_output_tokens: int | None = None

    @property
    def wildcard(self) -> bool:
        return self.model_id == "*"

    def serving(self, model_id: str) -> ModelProvider:
        """This wildcard as the provider of one concrete model."""
        return replace(self, model=f"{self.provider}/{model_id}", model_id=model_id, default=False,
                       model_prefixes=())


WILDCARD_NAMES = 1024  # names a Config remembers what a wildcard made of


def through_wildcard(wildcards: tuple[ModelProvider, ...], name: str) -> ModelProvider | None:
    """The wildcard that serves `name` (`anthropic/claude-x`, or a bare `claude-x` of its
    family), as the provider of that one model; None if no wildcard takes it."""
    if not is_model_name(name):
        return None
    provider, _, model_id = name.partition("/")
    for wildcard in wildcards:
        if wildcard.provider == provider and model_id:
            return wildcard.serving(model_id)
    for wildcard in wildcards:
        if name.startswith(wildcard.model_prefixes):
            return wildcard.serving(name)
    return None


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
    # auto: the pipelined client for a single-server URL, redis-py for Sentinel and Cluster.
    client: RedisClient = "auto"
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
class SessionSource:
    """Where a harness says which session a request belongs to (SPEC 4a): request headers,
    or one body field (`prompt_cache_key`, `metadata.user_id`, `previous_response_id`)."""

    name: str  # the x-model-affinity-source value and metrics label
    headers: tuple[str, ...] = ()  # lower-case
    body: str | None = None


DEFAULT_SESSION_SOURCES = (
    SessionSource("claude-code", headers=("x-claude-code-session-id",)),
    SessionSource("codex", headers=("session-id", "session_id")),
    SessionSource("session-header", headers=("x-session-id",)),
    SessionSource("prompt-cache-key", body="prompt_cache_key"),
    SessionSource("metadata", body="metadata.user_id"),
    SessionSource("previous-response", body="previous_response_id"),
)

DEFAULT_LANE_HEADERS = ("x-claude-code-agent-id",)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    router: RouterConfig = RouterConfig()
    session_ttl_seconds: int = 600
    session_max_entries: int = 10_000
    session_max_entries_per_tenant: int = 0  # 0: no per-tenant cap
    session_ttl_refresh: bool = False
    on_pinned_failure: PinnedFailure = "error"
    session_cache: SessionCacheConfig = SessionCacheConfig()
    session_sources: tuple[SessionSource, ...] = DEFAULT_SESSION_SOURCES
    implicit_affinity: bool = False  # fingerprint tenant, system prompt, tools, first user message
    lane_headers: tuple[str, ...] = DEFAULT_LANE_HEADERS  # sub-agent ids, lower-case
    unknown_model: UnknownModel = "reject"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Where requests to providers go out: an http:// egress proxy per target scheme (None:
    direct), and the hosts that bypass it. Resolved once at load, from `upstream.proxy` /
    `upstream.no_proxy` or else HTTPS_PROXY, HTTP_PROXY and NO_PROXY."""

    http: str | None = field(default=None, repr=False)  # may hold credentials
    https: str | None = field(default=None, repr=False)
    no_proxy: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    connect_timeout_ms: int = 3000
    first_byte_timeout_ms: int = 60_000  # request sent -> the response's status and headers
    read_timeout_ms: int = 60_000  # the longest silence inside a response body (a stream)
    total_timeout_ms: int = 600_000
    max_retries: int = 2
    retry_backoff_ms: int = 100
    max_connections: int = 1000  # per provider origin (scheme, host, port)
    pool_timeout_ms: int = 10_000  # the wait for a free connection, then a 503
    max_response_bytes: int = 32 * 1024 * 1024  # a non-streamed body
    max_header_bytes: int = 64 * 1024
    max_error_body_bytes: int = 64 * 1024  # read of an error body; the rest is never read
    max_sse_event_bytes: int = 1024 * 1024  # one line or event of a translated stream
    proxy: ProxyConfig = ProxyConfig()


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
class ResponsesConfig:
    """Stored Responses (`previous_response_id`): how long they live and how many are kept."""

    ttl_seconds: int = 86_400
    max_entries: int = 10_000


@dataclass(frozen=True, slots=True)
class AuthKey:
    key: str = field(repr=False)
    tenant: str
    max_pins: int | None = None  # this key's tenant's pin quota, over session_max_entries_per_tenant


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
class TracingConfig:
    """OpenTelemetry traces (gateway/config/tracing.py resolves it, gateway/tracing/__init__.py uses it)."""

    enabled: bool = False
    otlp_endpoint: str | None = None  # resolved when enabled: the full URL (or gRPC target) spans go to
    protocol: TracingProtocol = "http/protobuf"
    sample_ratio: float = 1.0  # of traces the gateway starts; a client's sampled traceparent always counts
    capture_content: bool = False  # the request's messages as a span attribute
    service_name: str | None = None  # None: OTEL_RESOURCE_ATTRIBUTES' service.name, else affinity-gateway
    batch_delay_ms: int = 5000
    max_queue_size: int = 2048
    export_timeout_ms: int = 10_000


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
    responses: ResponsesConfig = ResponsesConfig()
    auth: AuthConfig = AuthConfig()
    logging: LoggingConfig = LoggingConfig()
    server: ServerConfig = ServerConfig()
    metrics_enabled: bool = True
    tracing: TracingConfig = TracingConfig()
    warnings: tuple[str, ...] = ()
    wildcards: tuple[ModelProvider, ...] = ()  # `provider/*` entries, in declaration order
    # name -> what a wildcard made of it (a provider, or None): resolved once, not per request
    # (it costs a regex and a dataclass copy, about 5 us, and a request resolves twice or more).
    # Bounded, since names come from clients.
    _through_wildcards: dict[str, ModelProvider | None] = field(
        default_factory=dict, compare=False, repr=False)

    def resolve(self, name: str) -> ModelProvider | None:
        """The provider for a model name, bare id or alias (or one a wildcard passes through);
        None if it is not configured."""
        provider = self.models.get(name)
        if provider is None:
            if name in self.aliases:
                return self.resolve(self.aliases[name])
            if self.wildcards:
                return self._through_wildcard(name)
        return provider

    def _through_wildcard(self, name: str) -> ModelProvider | None:
        cache = self._through_wildcards
        if name in cache:
            return cache[name]
        if len(cache) >= WILDCARD_NAMES:
            cache.clear()
        found = cache[name] = through_wildcard(self.wildcards, name)
        return found

    def preference(self, name: str) -> RoutingPreference | None:
        for preference in self.preferences:
            if preference.name == name:
                return preference
        return None
