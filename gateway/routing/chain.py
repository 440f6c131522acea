"""The fallback chain: the route's ranked models, else the requested model, else the default."""

from __future__ import annotations

from gateway.config import Config


def candidates(config: Config, route: str | None, requested: str | None) -> tuple[str, ...]:
    """Models to try in order; the first is the decision, the rest are fallbacks on failure."""
    if route is not None:
        preference = config.preference(route)
        if preference is not None:
            return preference.models
    if requested is not None:
        provider = config.resolve(requested)
        if provider is not None:
            return (provider.model,)
    return (config.default_model,)
