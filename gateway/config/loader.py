"""Build a `Config` from a Plano-compatible YAML file (v0.3.0 and v0.4.0 forms)."""

from __future__ import annotations

import logging
import types
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import yaml

from gateway.config.providers import INTERFACES, KNOWN_WITHOUT_DEFAULT, api_base, interface_for
from gateway.config.reader import ConfigError, Node, describe
from gateway.config.schema import (
    DEFAULT_LANE_HEADERS,
    DEFAULT_SESSION_SOURCES,
    AuthConfig,
    AuthKey,
    Config,
    LimitsConfig,
    LoggingConfig,
    ModelProvider,
    ProxyConfig,
    ResponsesConfig,
    RouterConfig,
    RoutingConfig,
    RoutingPreference,
    ServerConfig,
    SessionCacheConfig,
    SessionSource,
    UpstreamConfig,
    through_wildcard,
)
from gateway.config.tracing import parse_tracing

logger = logging.getLogger("gateway.config")

# Plano keys the gateway reads but does not act on: loaded with one warning each.
PLANO_TOP_LEVEL = {
    key: "a Plano feature outside this gateway's scope"
    for key in (
        "prompt_targets", "endpoints", "system_prompt", "prompt_guards", "agents",
        "filters", "ratelimits", "model_metrics_sources", "state_storage", "mode",
    )
}
PLANO_ROUTING = {"routing_budget": "Plano's switch-cost budget is not implemented"}
PLANO_LISTENER = {"max_retries": "use upstream.max_retries instead"}
PLANO_OVERRIDES = {
    key: "a Plano override without effect here"
    for key in (
        "prompt_target_intent_matching_threshold", "optimize_context_window",
        "use_agent_orchestrator",
    )
}
PROTECTABLE = ("metrics", "models", "openapi")
VERSIONS = ("v0.1.0", "v0.2.0", "v0.3.0", "v0.4.0")
# A wildcard's bare names by default: the families each provider names its models with.
MODEL_FAMILIES: dict[str, tuple[str, ...]] = {
    "anthropic": ("claude-",),
    "openai": ("gpt-", "o1", "o3", "o4", "chatgpt-", "codex-"),
    "gemini": ("gemini-",),
    "mistral": ("mistral-", "codestral-", "devstral-", "magistral-", "ministral-", "pixtral-"),
    "deepseek": ("deepseek-",),
    "xai": ("grok-",),
}
SESSION_SOURCES = {source.name: source for source in DEFAULT_SESSION_SOURCES}
MEMORY_STORE_MAX = 10_000
REDIS_STORE_MAX = 1_000_000


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raises `ConfigError` with the key path on any mistake."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # e.g. saved as UTF-16 (PowerShell's default) or latin-1
        raise ConfigError("", f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader
    except DuplicateKey as exc:
        raise ConfigError("", f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError("", f"{path}: {problem}{where}") from None
    except RecursionError:
        raise ConfigError("", f"{path}: nested too deeply") from None
    return parse_config(data if data is not None else {}, environ)


class DuplicateKey(Exception):
    pass


class _UniqueKeys(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (YAML keeps the last one
    silently: a second `routing:` block would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges, and the keys beside it override, by design
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                line = key_node.start_mark.line + 1
                raise DuplicateKey(f"key {key!r} appears twice in one mapping (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_config(data: Any, environ: Mapping[str, str] | None = None) -> Config:
    root = Node(data, "", environ)
    warnings: list[str] = []
    version = root.string("version", "v0.4.0", choices=VERSIONS) or "v0.4.0"
    server, listener_timeout_ms = _listeners(root, warnings)
    every, inline = _providers(root, warnings)
    providers = tuple(p for p in every if not p.wildcard)
    wildcards = tuple(p for p in every if p.wildcard)
    if not providers:
        raise ConfigError("model_providers", "a concrete model (not only provider/*) must be the default")
    models = _model_index(providers)
    preferences = _preferences(root, inline, models, wildcards)
    aliases = _aliases(root, models, wildcards)
    defaults = [p for p in providers if p.default]
    if len(defaults) > 1:
        raise ConfigError("model_providers", "more than one model has default: true")
    default_model = (defaults or list(providers))[0].model
    routing = _routing(root, models, warnings)
    upstream = _upstream(root, listener_timeout_ms, warnings)
    config = Config(
        version=version,
        providers=providers,
        preferences=preferences,
        aliases=types.MappingProxyType(aliases),
        models=types.MappingProxyType(models),
        default_model=default_model,
        routing=routing,
        upstream=upstream,
        limits=_limits(root),
        responses=_responses(root, routing),
        auth=_auth(root, warnings),
        logging=_logging(root),
        server=_server(root, server),
        metrics_enabled=_metrics(root),
        tracing=parse_tracing(root, warnings),
        warnings=(),
        wildcards=wildcards,
    )
    warnings.extend(root.finish(PLANO_TOP_LEVEL))
    return replace(config, warnings=tuple(warnings))


def _listeners(root: Node, warnings: list[str]) -> tuple[ServerConfig, int]:
    server = ServerConfig()
    timeout_ms = 0
    seen_model_listener: str | None = None
    for element, path in root.items("listeners"):
        node = Node(element, path, root.environ)
        kind = node.string("type", "model")
        if kind != "model":
            # Agent and prompt listeners carry Plano's own keys (router, agents, ...): the whole
            # listener is one warning, not an unknown-key error per key.
            warnings.append(f"{path}.type: {kind!r} listeners are a Plano feature; ignored")
            continue
        if seen_model_listener is not None:  # one process serves one address and port
            message = f"one model listener is served, and {seen_model_listener} is one"
            raise ConfigError(f"{path}.type", message)
        seen_model_listener = path
        node.string("name")
        address = node.string("address", server.host) or server.host
        port = node.integer("port", server.port, 1, 65535)
        timeout = node.duration_ms("timeout", 0, 0)
        warnings.extend(node.finish(PLANO_LISTENER))
        server = ServerConfig(host=address, port=port)
        timeout_ms = timeout
    # The listener's timeout is Plano's whole-request timeout; it seeds upstream.total_timeout_ms.
    return server, timeout_ms


def _providers(
    root: Node, warnings: list[str]
) -> tuple[tuple[ModelProvider, ...], list[tuple[RoutingPreference, str]]]:
    providers: list[ModelProvider] = []
    inline: list[tuple[RoutingPreference, str]] = []
    seen: set[str] = set()
    for element, path in root.items("model_providers"):
        node = Node(element, path, root.environ)
        model = header_safe(node.string("model", required=True) or "", f"{path}.model")
        node.string("name")
        provider, _, model_id = model.partition("/")
        if not provider or not model_id:
            raise ConfigError(f"{path}.model", f"expected provider/model-id, got {model!r}")
        if model in seen:
            raise ConfigError(f"{path}.model", f"{model!r} is configured twice")
        seen.add(model)
        declared = node.string("provider_interface", choices=INTERFACES)
        base_url = node.string("base_url") or None
        if base_url is None and provider in KNOWN_WITHOUT_DEFAULT:
            raise ConfigError(f"{path}.base_url", f"is required for provider {provider!r}")
        access_key = node.secret("access_key")
        interface = interface_for(provider, declared)
        responses = node.string(
            "responses", "native" if provider == "openai" else "translate", choices=("native", "translate")
        )
        if responses == "native" and interface != "openai":
            raise ConfigError(f"{path}.responses", "native Responses needs an OpenAI-kind provider")
        wildcard = model_id == "*"
        default = node.boolean("default", False)
        if wildcard and default:
            raise ConfigError(f"{path}.default", "a wildcard (provider/*) cannot be the default model")
        if wildcard and node.raw("routing_preferences"):
            raise ConfigError(f"{path}.routing_preferences", "name concrete models, not a wildcard")
        prefixes = node.strings("model_prefixes")
        if prefixes and not wildcard:
            raise ConfigError(f"{path}.model_prefixes", "only a wildcard (provider/*) takes model_prefixes")
        if any(not prefix.strip() for prefix in prefixes):  # "" would take every unknown name
            raise ConfigError(f"{path}.model_prefixes", "contains an empty prefix")
        providers.append(
            ModelProvider(
                model=model,
                provider=provider,
                model_id=model_id,
                interface=interface,
                api_base=api_base(provider, base_url, f"{path}.base_url"),
                access_key=access_key or None,
                default=default,
                responses=cast(Any, responses),
                model_prefixes=prefixes or (MODEL_FAMILIES.get(provider, ()) if wildcard else ()),
                max_output_tokens=node.integer("max_output_tokens", 0, 1, 10_000_000) or None,
            )
        )
        for pref, pref_path in node.items("routing_preferences"):
            inline.append((_preference(Node(pref, pref_path, root.environ), (model,)), pref_path))
        warnings.extend(node.finish())
    if not providers:
        raise ConfigError("model_providers", "at least one model provider is required")
    return tuple(providers), inline


def _model_index(providers: tuple[ModelProvider, ...]) -> dict[str, ModelProvider]:
    """Full names always; a bare id only when exactly one provider serves it."""
    index = {p.model: p for p in providers}
    bare: dict[str, list[ModelProvider]] = {}
    for provider in providers:
        bare.setdefault(provider.model_id, []).append(provider)
    for model_id, owners in bare.items():
        if len(owners) == 1 and model_id not in index:
            index[model_id] = owners[0]
    return index


def header_safe(text: str, path: str) -> str:
    """A name the gateway sends back in a response header (x-gateway-model, x-gateway-route):
    latin-1 with no control character, or every response naming it would fail to be sent."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0xFF for c in text):
        raise ConfigError(path, f"must be latin-1 text with no control character, got {describe(text)}")
    return text


def _preference(node: Node, models: tuple[str, ...]) -> RoutingPreference:
    name = header_safe(node.string("name", required=True) or "", node.at("name"))
    preference = RoutingPreference(
        name=name,
        description=node.string("description", "") or "",
        examples=node.strings("examples"),
        models=models or node.strings("models"),
    )
    if not models:
        node.raw("models")
    node.finish()
    return preference


def _preferences(
    root: Node,
    inline: list[tuple[RoutingPreference, str]],
    models: dict[str, ModelProvider],
    wildcards: tuple[ModelProvider, ...],
) -> tuple[RoutingPreference, ...]:
    merged: dict[str, RoutingPreference] = {}
    sources: list[tuple[RoutingPreference, str]] = [
        (_preference(Node(e, p, root.environ), ()), p) for e, p in root.items("routing_preferences")
    ]
    for preference, path in [*sources, *inline]:
        resolved = []
        for index, name in enumerate(preference.models):
            provider = models.get(name) or through_wildcard(wildcards, name)
            if provider is None:
                raise ConfigError(f"{path}.models[{index}]", f"unknown model {name!r}")
            resolved.append(provider.model)
        earlier = merged.get(preference.name)
        if earlier is None:
            merged[preference.name] = RoutingPreference(
                preference.name, preference.description, preference.examples, tuple(resolved)
            )
            continue
        merged[preference.name] = RoutingPreference(
            name=preference.name,
            description=earlier.description or preference.description,
            examples=earlier.examples + tuple(e for e in preference.examples if e not in earlier.examples),
            models=earlier.models + tuple(m for m in resolved if m not in earlier.models),
        )
    for name, preference in merged.items():
        if not preference.models:
            raise ConfigError("routing_preferences", f"preference {name!r} names no models")
    return tuple(merged.values())


def _aliases(
    root: Node, models: dict[str, ModelProvider], wildcards: tuple[ModelProvider, ...]
) -> dict[str, str]:
    node = root.child("model_aliases")
    if node is None:
        return {}
    aliases = {}
    for alias in list(node.data):
        target_node = node.child(str(alias))
        if target_node is None:
            raise ConfigError(node.at(str(alias)), "expected a mapping with target")
        target = target_node.string("target", required=True) or ""
        target_node.finish()
        provider = models.get(target) or through_wildcard(wildcards, target)
        if provider is None:
            raise ConfigError(f"{target_node.path}.target", f"unknown model {target!r}")
        aliases[str(alias)] = provider.model
    node.finish()
    return aliases


def _router(
    routing: Node, root: Node, models: dict[str, ModelProvider], override_model: str | None
) -> RouterConfig:
    raw = routing.raw("router")
    if raw is None:
        router = RouterConfig(type="llm", model=override_model) if override_model else RouterConfig()
    elif isinstance(raw, str):
        kind = routing.string("router", choices=("builtin", "llm"))
        router = RouterConfig(type=cast(Any, kind), model=override_model)
    else:
        node = Node(raw, routing.at("router"), root.environ)
        kind = node.string("type", "builtin", choices=("builtin", "llm"))
        router = RouterConfig(
            type=cast(Any, kind),
            threshold=node.number("threshold", 0.2, 0.0, 100.0),
            model=node.string("model") or override_model,
            timeout_ms=node.integer("timeout_ms", 300, 1, 60_000),
        )
        node.finish()
    if router.type == "llm":
        if router.model is None:
            raise ConfigError(routing.at("router"), "the llm router needs a model")
        named_in_router = isinstance(raw, Mapping) and raw.get("model") is not None
        from_override = override_model is not None and not named_in_router  # Plano's key
        where = "overrides.llm_routing_model" if from_override else routing.at("router")
        provider = models.get(router.model)
        if provider is None:
            raise ConfigError(where, f"unknown router model {router.model!r}")
        if provider.interface != "openai":
            raise ConfigError(
                where,
                f"the llm router speaks the OpenAI API; {provider.model!r} is an {provider.interface} model",
            )
        router = RouterConfig("llm", router.threshold, provider.model, router.timeout_ms)
    return router


def _routing(root: Node, models: dict[str, ModelProvider], warnings: list[str]) -> RoutingConfig:
    routing = root.child("routing") or Node({}, "routing", root.environ)
    overrides = root.child("overrides")
    override_model = None
    if overrides is not None:
        override_model = overrides.string("llm_routing_model")
        warnings.extend(overrides.finish(PLANO_OVERRIDES))
    router = _router(routing, root, models, override_model)
    cache = _session_cache(routing)
    ceiling = MEMORY_STORE_MAX if cache.type == "memory" else REDIS_STORE_MAX
    suffix = " with the memory store" if cache.type == "memory" else ""
    max_entries = routing.raw("session_max_entries")
    if isinstance(max_entries, int) and not isinstance(max_entries, bool) and max_entries > ceiling:
        raise ConfigError(
            routing.at("session_max_entries"), f"must be at most {ceiling}{suffix}, got {max_entries}"
        )
    result = RoutingConfig(
        router=router,
        session_ttl_seconds=routing.integer("session_ttl_seconds", 600, 1, 30 * 86_400),
        session_max_entries=routing.integer("session_max_entries", 10_000, 1, ceiling),
        session_max_entries_per_tenant=routing.integer("session_max_entries_per_tenant", 0, 0, ceiling),
        session_ttl_refresh=routing.boolean("session_ttl_refresh", False),
        on_pinned_failure=cast(
            Any, routing.string("on_pinned_failure", "error", choices=("error", "reroute"))
        ),
        session_cache=cache,
        session_sources=_session_sources(routing),
        implicit_affinity=routing.boolean("implicit_affinity", False),
        lane_headers=tuple(name.lower() for name in routing.strings("lane_headers"))
        if routing.raw("lane_headers") is not None else DEFAULT_LANE_HEADERS,
        unknown_model=cast(Any, routing.string("unknown_model", "reject", choices=("reject", "default"))),
    )
    warnings.extend(routing.finish(PLANO_ROUTING))
    return result


def _session_sources(routing: Node) -> tuple[SessionSource, ...]:
    """Built-in sources by name, in the order given (leave one out to turn it off), or
    `{header: name}` for a harness of your own (reported as `session-header`)."""
    if routing.raw("session_sources") is None:
        return DEFAULT_SESSION_SOURCES
    sources: list[SessionSource] = []
    for element, path in routing.items("session_sources"):
        if isinstance(element, str):
            if element not in SESSION_SOURCES:
                known = ", ".join(SESSION_SOURCES)
                raise ConfigError(path, f"unknown session source {element!r} (known: {known})")
            sources.append(SESSION_SOURCES[element])
            continue
        node = Node(element, path, routing.environ)
        if not isinstance(element, dict):
            raise ConfigError(path, f"expected a source name or {{header: name}}, got {describe(element)}")
        name = (node.string("header", required=True) or "").strip().lower()
        node.finish()
        if not name or not name.isascii() or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{path}.header", f"expected an HTTP header name, got {name!r}")
        sources.append(SessionSource("session-header", headers=(name,)))
    return tuple(sources)


def _session_cache(routing: Node) -> SessionCacheConfig:
    node = routing.child("session_cache")
    if node is None:
        return SessionCacheConfig()
    url = node.string("url") or None
    sentinel = node.child("sentinel")
    master: str | None = None
    sentinels: tuple[str, ...] = ()
    if sentinel is not None:
        master = sentinel.string("master_name", required=True)
        sentinels = sentinel.strings("sentinels")
        if not sentinels:
            raise ConfigError(f"{sentinel.path}.sentinels", "needs at least one host:port")
        sentinel.finish()
    default_type = "redis" if (url or sentinels) else "memory"
    kind = node.string("type", default_type, choices=("memory", "redis")) or default_type
    if kind == "redis" and not (url or sentinels):
        raise ConfigError(f"{node.path}.url", "is required for the redis store (or set sentinel)")
    if url and not url.startswith(("redis://", "rediss://", "redis+sentinel://", "unix://")):
        # (not echoed: a mistyped URL still holds its password)
        raise ConfigError(f"{node.path}.url",
                          "expected a redis://, rediss://, redis+sentinel:// or unix:// URL")
    cache = SessionCacheConfig(
        type=cast(Any, kind),
        url=url,
        tenant_header=(node.string("tenant_header") or "").lower() or None,
        client=cast(Any, node.string("client", "auto", choices=("auto", "pipelined", "redis-py"))),
        key_prefix=node.string("key_prefix", "agw") or "agw",
        cluster=node.boolean("cluster", False),
        sentinel_master=master,
        sentinels=sentinels,
        socket_timeout_ms=node.integer("socket_timeout_ms", 250, 1, 60_000),
        connect_timeout_ms=node.integer("connect_timeout_ms", 500, 1, 60_000),
        pool_size=node.integer("pool_size", 64, 1, 10_000),
        local_cache_entries=node.integer("local_cache_entries", 10_000, 1, MEMORY_STORE_MAX),
        breaker_cooldown_ms=node.integer("breaker_cooldown_ms", 1000, 1, 600_000),
    )
    replicated = bool(sentinels) or cache.cluster or (url or "").startswith("redis+sentinel://")
    if cache.client == "pipelined" and replicated:
        raise ConfigError(node.at("client"),
                          "pipelined serves a single server; Sentinel and Cluster need redis-py")
    node.finish()
    return cache


def _upstream(root: Node, listener_timeout_ms: int, warnings: list[str]) -> UpstreamConfig:
    node = root.child("upstream") or Node({}, "upstream", root.environ)
    total_default = listener_timeout_ms or 600_000
    first_byte = node.integer("first_byte_timeout_ms", 60_000, 1, 3_600_000)
    read_default = 60_000
    if "first_byte_timeout_ms" in node and "read_timeout_ms" not in node:
        # Until this release first_byte_timeout_ms also bounded the silence inside a stream.
        read_default = first_byte
        warnings.append(
            f"{node.at('first_byte_timeout_ms')}: now bounds only the wait for the response's first "
            "byte; set upstream.read_timeout_ms for the silence allowed inside a stream (it takes "
            "this value until then; that fallback goes in the next release)"
        )
    mib = 1024 * 1024
    config = UpstreamConfig(
        connect_timeout_ms=node.integer("connect_timeout_ms", 3000, 1, 600_000),
        first_byte_timeout_ms=first_byte,
        read_timeout_ms=node.integer("read_timeout_ms", read_default, 1, 3_600_000),
        total_timeout_ms=node.integer("total_timeout_ms", total_default, 1, 86_400_000),
        max_retries=node.integer("max_retries", 2, 0, 10),
        retry_backoff_ms=node.integer("retry_backoff_ms", 100, 0, 60_000),
        max_connections=node.integer("max_connections", 1000, 1, 100_000),
        pool_timeout_ms=node.integer("pool_timeout_ms", 10_000, 1, 600_000),
        max_response_bytes=node.integer("max_response_bytes", 32 * mib, 1024, 1024 * mib),
        max_header_bytes=node.integer("max_header_bytes", 64 * 1024, 1024, 16 * mib),
        max_error_body_bytes=node.integer("max_error_body_bytes", 64 * 1024, 1024, 16 * mib),
        max_sse_event_bytes=node.integer("max_sse_event_bytes", mib, 1024, 256 * mib),
        proxy=_proxy(node),
    )
    node.finish()
    return config


PROXY_VARIABLES = {"https": ("https_proxy", "HTTPS_PROXY"), "http": ("http_proxy", "HTTP_PROXY")}


def _proxy(node: Node) -> ProxyConfig:
    """`upstream.proxy` (one proxy for both schemes; empty: none, whatever the environment
    says) and `upstream.no_proxy` win over HTTPS_PROXY / HTTP_PROXY / NO_PROXY (lower case
    first, as curl reads them)."""
    environ = node.environ
    if "no_proxy" in node:
        no_proxy = tuple(host for host in node.strings("no_proxy") if host.strip())
    else:
        raw = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
        no_proxy = tuple(host.strip() for host in raw.split(",") if host.strip())
    if "proxy" in node:
        url = _proxy_url(node.secret("proxy") or "", node.at("proxy"))
        return ProxyConfig(http=url, https=url, no_proxy=no_proxy)
    found: dict[str, str | None] = {}
    for scheme, names in PROXY_VARIABLES.items():
        name = next((name for name in names if environ.get(name, "").strip()), None)
        found[scheme] = None if name is None else _proxy_url(environ[name].strip(), name)
    return ProxyConfig(http=found["http"], https=found["https"], no_proxy=no_proxy)


def _proxy_url(url: str, path: str) -> str | None:
    """An http:// proxy URL (a bare host:port means http://); errors never echo it, since it
    may hold a password."""
    if not url:
        return None
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ConfigError(path, "is not a valid proxy URL") from None
    if parts.scheme != "http":
        raise ConfigError(path, f"only http:// proxies are supported, not {parts.scheme}://")
    if not parts.hostname:
        raise ConfigError(path, "a proxy URL needs a host")
    return url


def _limits(root: Node) -> LimitsConfig:
    node = root.child("limits") or Node({}, "limits", root.environ)
    limits = LimitsConfig(
        max_body_bytes=node.integer("max_body_bytes", 8 * 1024 * 1024, 1024, 1024**3),
        max_header_bytes=node.integer("max_header_bytes", 64 * 1024, 1024, 1024 * 1024),
        max_header_count=node.integer("max_header_count", 100, 10, 10_000),
        header_timeout_seconds=node.number("header_timeout_seconds", 10.0, 0.1, 3600.0),
        body_timeout_seconds=node.number("body_timeout_seconds", 60.0, 0.1, 86_400.0),
        max_messages=node.integer("max_messages", 10_000, 1, 1_000_000),
        max_concurrent_per_tenant=node.integer("max_concurrent_per_tenant", 0, 0, 1_000_000),
    )
    node.finish()
    return limits


def _responses(root: Node, routing: RoutingConfig) -> ResponsesConfig:
    node = root.child("responses") or Node({}, "responses", root.environ)
    memory = routing.session_cache.type == "memory"
    ceiling = MEMORY_STORE_MAX if memory else REDIS_STORE_MAX
    config = ResponsesConfig(
        ttl_seconds=node.integer("ttl_seconds", 86_400, 1, 30 * 86_400),
        max_entries=node.integer("max_entries", 10_000, 1, ceiling),
    )
    node.finish()
    return config


def _auth(root: Node, warnings: list[str]) -> AuthConfig:
    node = root.child("auth")
    if node is None:
        return AuthConfig()
    if node.raw("keys") == [] and not node.raw("admin_keys"):
        warnings.append("auth.keys: empty, so every request is served without a key")
    keys = []
    quotas: dict[str, int] = {}
    first_with: dict[str, str] = {}  # key -> the path that gave it first
    for element, path in node.items("keys"):
        entry = Node(element, path, root.environ)
        key = entry.secret("key")  # latin-1 only (reader.py): compared with the header's bytes
        tenant = entry.string("tenant", "default") or "default"
        max_pins = None
        if entry.raw("max_pins") is not None:
            max_pins = entry.integer("max_pins", 0, 1, REDIS_STORE_MAX)
        entry.finish()  # a misspelt `key:` is named as such, not as a missing key
        if key is None:
            raise ConfigError(f"{path}.key", "is required")
        if not key:
            raise ConfigError(f"{path}.key", "is empty")
        if key in first_with:  # one key, one tenant: else the first would win without a word
            raise ConfigError(f"{path}.key", f"is the same key as {first_with[key]}.key")
        first_with[key] = path
        if max_pins is not None and quotas.setdefault(tenant, max_pins) != max_pins:
            raise ConfigError(f"{path}.max_pins", f"tenant {tenant!r} already has max_pins {quotas[tenant]} "
                              "from another key; a quota is per tenant")
        keys.append(AuthKey(key=key, tenant=tenant, max_pins=max_pins))
    admin = node.secrets("admin_keys")
    if any(not key for key in admin):
        raise ConfigError(node.at("admin_keys"), "contains an empty key")
    protect = node.strings("protect")
    for index, name in enumerate(protect):
        if name not in PROTECTABLE:
            raise ConfigError(
                f"{node.at('protect')}[{index}]", f"expected one of {', '.join(PROTECTABLE)}, got {name!r}"
            )
    if protect and not (keys or admin):
        raise ConfigError(node.at("protect"), "needs auth.keys or auth.admin_keys to check keys against")
    node.finish()
    return AuthConfig(
        keys=tuple(keys), admin_keys=admin, protect=cast(Any, tuple(dict.fromkeys(protect)))
    )


def _logging(root: Node) -> LoggingConfig:
    node = root.child("logging") or Node({}, "logging", root.environ)
    levels = ("debug", "info", "warning", "error", "critical")
    config = LoggingConfig(
        level=(node.string("level", "info") or "info").lower(),
        format=cast(Any, node.string("format", "auto", choices=("auto", "json", "text"))),
    )
    if config.level not in levels:
        raise ConfigError(node.at("level"), f"expected one of {', '.join(levels)}, got {config.level!r}")
    node.finish()
    return config


def _server(root: Node, listener: ServerConfig) -> ServerConfig:
    node = root.child("server") or Node({}, "server", root.environ)
    config = ServerConfig(
        host=listener.host,
        port=listener.port,
        drain_timeout_seconds=node.integer("drain_timeout_seconds", 25, 0, 3600),
        max_connections=node.integer("max_connections", 4096, 1, 1_000_000),
    )
    node.finish()
    return config


def _metrics(root: Node) -> bool:
    node = root.child("metrics") or Node({}, "metrics", root.environ)
    enabled = node.boolean("enabled", True)
    node.finish()
    return enabled
