"""Gateway API keys: who is calling, and which tenant their pins belong to."""

from __future__ import annotations

import hmac

from gateway.config import AuthConfig
from gateway.errors import Forbidden, Unauthorized
from gateway.http import header
from gateway.types import Scope

DEFAULT_TENANT = "default"


class Authenticator:
    def __init__(self, config: AuthConfig, tenant_header: str | None) -> None:
        self.keys = [(key.key.encode(), key.tenant) for key in config.keys]
        self.admin_keys = [key.encode() for key in config.admin_keys]
        self.tenant_header = tenant_header.encode() if tenant_header else None
        self.enabled = config.enabled

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

    def header_tenant(self, scope: Scope) -> str:
        """The tenant named by `tenant_header`, when keys do not decide it."""
        if self.tenant_header is None:
            return DEFAULT_TENANT
        return header(scope, self.tenant_header) or DEFAULT_TENANT


def presented_key(scope: Scope) -> bytes | None:
    authorization = header(scope, b"authorization")
    if authorization is not None and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip().encode("latin-1")
    api_key = header(scope, b"x-api-key")
    return api_key.strip().encode("latin-1") if api_key is not None else None
