"""Provider names, their API shapes and default API roots."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config.reader import ConfigError
from gateway.config.render import mask_userinfo
from gateway.config.schema import ProviderInterface

# Where each known provider's OpenAI-compatible (or native) API lives.
DEFAULT_API_BASES: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "together_ai": "https://api.together.xyz/v1",
    "xai": "https://api.x.ai/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
}
# Providers that need a base_url because they have no public default (azure_openai: per resource).
KNOWN_WITHOUT_DEFAULT = frozenset({"azure_openai"})
INTERFACES: tuple[ProviderInterface, ...] = ("openai", "anthropic")


def interface_for(provider: str, declared: str | None) -> ProviderInterface:
    if declared == "anthropic" or (declared is None and provider == "anthropic"):
        return "anthropic"
    return "openai"


def api_base(provider: str, base_url: str | None, path: str) -> str:
    """The API root requests are sent under: `base_url` as given if it has a path
    (`http://vllm:8000/v1`, `.../openai/v1`), else with `/v1` added (Plano's `http://host:port`)."""
    if base_url is None:
        if provider in DEFAULT_API_BASES:
            return DEFAULT_API_BASES[provider]
        raise ConfigError(path, f"is required for provider {provider!r}")
    parts = urlsplit(base_url)
    shown = mask_userinfo(base_url)  # never echo credentials
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in base_url):
        raise ConfigError(path, f"expected an http(s) URL, got {shown!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError:
        raise ConfigError(path, f"bad port in {shown!r}") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(path, "credentials in the URL are not sent; give the key as access_key")
    if parts.query or parts.fragment:
        raise ConfigError(path, f"expected the API root, with no ?query or #fragment, got {shown!r}")
    root = base_url.rstrip("/")
    return root if parts.path.strip("/") else root + "/v1"
