"""Request limits that need no body: header size and a per-tenant concurrency cap."""

from __future__ import annotations

from gateway.errors import HeadersTooLarge, RateLimited
from gateway.types import Scope


def check_header_size(scope: Scope, limit: int) -> None:
    size = sum(len(name) + len(value) for name, value in scope["headers"])
    if size > limit:
        raise HeadersTooLarge(f"request headers are larger than {limit} bytes", code="headers_too_large")


class TenantConcurrency:
    """At most `cap` requests in flight per tenant in this process (0: no cap)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.inflight: dict[str, int] = {}

    def acquire(self, tenant: str) -> None:
        if not self.cap:
            return
        current = self.inflight.get(tenant, 0)
        if current >= self.cap:
            raise RateLimited(
                f"tenant has {current} requests in flight; the limit is {self.cap}",
                code="tenant_concurrency_limit", headers={"retry-after": "1"},
            )
        self.inflight[tenant] = current + 1

    def release(self, tenant: str) -> None:
        if not self.cap:
            return
        remaining = self.inflight.get(tenant, 1) - 1
        if remaining:
            self.inflight[tenant] = remaining
        else:
            self.inflight.pop(tenant, None)
