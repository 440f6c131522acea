"""The resolved config as YAML for `check-config`, with every secret masked."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import yaml

from gateway.config.schema import Config

# Up to the last "@" before the path: a password may hold a raw "@" (redis-py accepts it).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z+]+://[^:/@]*:)[^/]*@")
_USERINFO = re.compile(r"(?P<head>[a-z+]+://)[^/]*@")
# Query values that may be credentials (`?password=`, `?api_key=`, `?token=` ...).
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&][^=&#]*(?:pass|key|token|secret|auth)[^=&#]*=)[^&#]*", re.IGNORECASE)


def mask(secret: str | None) -> str | None:
    """Show only that a secret is set and how long it is, never any of its characters."""
    return None if secret is None else f"***({len(secret)} chars)"


def mask_url(url: str | None) -> str | None:
    """A URL with its password (the user stays, as it names who connects) and any query
    value that may be a credential hidden."""
    return None if url is None else _SECRET_QUERY.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>***@", url))


def mask_userinfo(url: str | None) -> str | None:
    """A URL with its user and password both hidden (a token may stand as the user), and any
    query value that may be a credential."""
    return None if url is None else _SECRET_QUERY.sub(r"\g<head>***", _USERINFO.sub(r"\g<head>***@", url))


def render_config(config: Config) -> str:
    data: dict[str, Any] = {
        "version": config.version,
        "server": dataclasses.asdict(config.server),
        "model_providers": [
            _plain({**dataclasses.asdict(p), "access_key": mask(p.access_key)})
            for p in (*config.providers, *config.wildcards)
        ],
        "default_model": config.default_model,
        "routing_preferences": [
            {**dataclasses.asdict(p), "examples": list(p.examples), "models": list(p.models)}
            for p in config.preferences
        ],
        "model_aliases": dict(config.aliases),
        "routing": _plain(dataclasses.asdict(config.routing)),
        "upstream": dataclasses.asdict(config.upstream),
        "limits": dataclasses.asdict(config.limits),
        "auth": {
            "keys": [{"key": mask(k.key), "tenant": k.tenant} for k in config.auth.keys],
            "admin_keys": [mask(k) for k in config.auth.admin_keys],
            "protect": list(config.auth.protect),
        },
        "logging": dataclasses.asdict(config.logging),
        "metrics": {"enabled": config.metrics_enabled},
        "tracing": dataclasses.asdict(config.tracing),
    }
    data["tracing"]["otlp_endpoint"] = mask_userinfo(config.tracing.otlp_endpoint)
    data["routing"]["session_cache"]["url"] = mask_url(config.routing.session_cache.url)
    proxy = config.upstream.proxy
    data["upstream"]["proxy"] = {"http": mask_userinfo(proxy.http), "https": mask_userinfo(proxy.https),
                                 "no_proxy": list(proxy.no_proxy)}
    return yaml.safe_dump(data, sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
