"""Configuration: Plano-compatible YAML in, frozen typed objects out."""

from gateway.config.loader import load_config, parse_config
from gateway.config.reader import ConfigError
from gateway.config.render import render_config
from gateway.config.schema import (
    AuthConfig,
    AuthKey,
    Config,
    LimitsConfig,
    LoggingConfig,
    ModelProvider,
    ProxyConfig,
    RouterConfig,
    RoutingConfig,
    RoutingPreference,
    ServerConfig,
    SessionCacheConfig,
    TracingConfig,
    UpstreamConfig,
)

__all__ = [
    "AuthConfig",
    "AuthKey",
    "Config",
    "ConfigError",
    "LimitsConfig",
    "LoggingConfig",
    "ModelProvider",
    "ProxyConfig",
    "RouterConfig",
    "RoutingConfig",
    "RoutingPreference",
    "ServerConfig",
    "SessionCacheConfig",
    "TracingConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
    "render_config",
]
