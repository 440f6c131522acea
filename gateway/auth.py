"""Gateway API keys: who is calling, and which tenant their pins belong to.

Keys are compared as bytes: the configured key's Latin-1 bytes (HTTP header values are Latin-1,
and the config accepts only keys that are) against the header's bytes as received."""

from __future__ import annotations

import hmac

from gateway.config import AuthConfig
from gateway.errors import Forbidden, GatewayError, Unauthorized
from gateway.http import header, header_bytes, respond
from gateway.types import ASGIApp, Receive, Scope, Send

DEFAULT_TENANT = "default"
OWS = b" \t"  # the whitespace HTTP allows around a header value


class Authenticator:
    def __init__(self, config: AuthConfig, tenant_header: str | None) -> None:
        self.keys = [(key.key.encode("latin-1"), key.tenant) for key in config.keys]
        self.admin_keys = [key.encode("latin-1") for key in config.admin_keys]
        self.tenant_header = tenant_header.encode() if tenant_header else None
        self.enabled = config.enabled
        self.protect = frozenset(config.protect)

    def tenant(self, scope: Scope) -> str:
        """The caller's tenant; 401 when keys are configured and none matches."""
        if not self.keys:
            return self.header_tenant(scope)
        presented = presented_key(scope)
        tenant = None
        # Compare against every key, in constant time each, so timing reveals neither key nor index.
        for key, owner in self.keys:
            if presented is not None and hmac.compare_digest(key, presented) and tenant is None:
                tenant = owner
        if tenant is None:
            raise Unauthorized("missing or invalid API key", code="invalid_api_key")
        return tenant

    def require_admin(self, scope: Scope) -> None:
        presented = presented_key(scope)
        allowed = False
        for key in self.admin_keys:
            if presented is not None and hmac.compare_digest(key, presented):
                allowed = True
        if not allowed:
            if presented is None:
                raise Unauthorized("an admin API key is required", code="invalid_api_key")
            raise Forbidden("this key may not manage pins", code="admin_key_required")

    def require_any_key(self, scope: Scope) -> None:
        """401 unless the request carries a gateway key or an admin key (`auth.protect`)."""
        presented = presented_key(scope)
        allowed = False
        for key in [*(key for key, _ in self.keys), *self.admin_keys]:
            if presented is not None and hmac.compare_digest(key, presented):
                allowed = True
        if not allowed:
            raise Unauthorized("missing or invalid API key", code="invalid_api_key")

    def guard(self, name: str, endpoint: ASGIApp) -> ASGIApp:
        """`endpoint` behind a key when `auth.protect` names it, else `endpoint` itself."""
        return KeyRequired(endpoint, self) if name in self.protect else endpoint

    def header_tenant(self, scope: Scope) -> str:
        """The tenant named by `tenant_header`, when keys do not decide it."""
        if self.tenant_header is None:
            return DEFAULT_TENANT
        return header(scope, self.tenant_header) or DEFAULT_TENANT


class KeyRequired:
    """An otherwise open endpoint (`/metrics`, `/v1/models`, `/openapi.json`) behind a key."""

    def __init__(self, endpoint: ASGIApp, auth: Authenticator) -> None:
        self.endpoint = endpoint
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.auth.require_any_key(scope)
        except GatewayError as error:
            await respond(send, error.status, error.body(), error.header_pairs())
            return
        await self.endpoint(scope, receive, send)


def presented_key(scope: Scope) -> bytes | None:
    authorization = header_bytes(scope, b"authorization")
    if authorization is not None and authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip(OWS)
    api_key = header_bytes(scope, b"x-api-key")
    return api_key.strip(OWS) if api_key is not None else None
