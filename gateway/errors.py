"""The gateway's error hierarchy; each error knows its HTTP status and OpenAI error envelope.

    GatewayError
    ├── Overloaded                  503: this replica has too many connections open
    ├── ClientError                 4xx: the request is at fault
    │   ├── BadRequest              400 (invalid_request_error)
    │   ├── Unauthorized            401
    │   ├── Forbidden               403
    │   ├── NotFound                404
    │   ├── NoRoute                 404 (an unknown path: invalid_request_error, as OpenAI says)
    │   ├── MethodNotAllowed        405
    │   ├── RequestTimeout          408 (the request came too slowly; gateway/server.py)
    │   ├── PayloadTooLarge         413
    │   ├── RateLimited             429
    │   ├── HeadersTooLarge         431
    │   └── ClientClosed            499 (nginx's code: the client left before its body arrived)
    └── UpstreamError               5xx: the provider (or the way to it) is at fault
        ├── BadGateway              502
        ├── ServiceUnavailable      503
        └── GatewayTimeout          504
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    status = 500
    type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())

    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        """The headers the error carries (a `Retry-After`), as ASGI sends them."""
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]


class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"


class BadRequest(ClientError):
    status = 400


class Unauthorized(ClientError):
    status = 401
    type = "authentication_error"


class Forbidden(ClientError):
    status = 403
    type = "permission_error"


class NotFound(ClientError):
    status = 404
    type = "not_found_error"


class NoRoute(ClientError):
    status = 404


class MethodNotAllowed(ClientError):
    status = 405


class RequestTimeout(ClientError):
    status = 408


class PayloadTooLarge(ClientError):
    status = 413


class RateLimited(ClientError):
    status = 429
    type = "rate_limit_error"


class HeadersTooLarge(ClientError):
    status = 431


class ClientClosed(ClientError):
    status = 499


class Overloaded(GatewayError):
    status = 503


class StoreUnavailable(GatewayError):
    status = 503


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, reason: str = "error", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason  # low-cardinality label for gateway_upstream_errors_total

    @property
    def request_at_fault(self) -> bool:
        """The provider refused the request itself: another model, or a moved pin, would not help."""
        return self.reason == "rejected"


class BadGateway(UpstreamError):
    status = 502


class ServiceUnavailable(UpstreamError):
    status = 503


class GatewayTimeout(UpstreamError):
    status = 504
    type = "timeout_error"


class UpstreamStatusError(UpstreamError):
    """The provider answered with an error status; `status` is what the client gets."""

    def __init__(self, status: int, message: str, *, reason: str, **kwargs: Any) -> None:
        super().__init__(message, reason=reason, **kwargs)
        self.status = status
        self.type = _TYPE_FOR_STATUS.get(status, "upstream_error")


_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}
