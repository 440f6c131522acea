"""The client the gateway calls providers with: one interface, its parts in this package."""

from gateway.upstream.client import UpstreamClient, UpstreamResponse

__all__ = ["UpstreamClient", "UpstreamResponse"]
