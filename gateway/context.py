"""What one request accumulates on its way through the pipeline, so that its end (the
response, the metrics, the access line) reads one object instead of loose variables."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.apis import ClientApi, ClientRequest
from gateway.decider import Plan
from gateway.dispatch import Served
from gateway.http import DisconnectWatch
from gateway.sessions import Seen
from gateway.types import Scope


@dataclass(slots=True)
class RequestContext:
    scope: Scope
    api: ClientApi
    endpoint: str  # the metrics and log label
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    tenant: str | None = None  # set once admitted (and holding a concurrency slot)
    request: ClientRequest | None = None
    plan: Plan | None = None
    seen: Seen | None = None  # the headers sessions and upstreams care about
    served: Served | None = None
    usage: dict[str, int] | None = None
    status: int = 500
    responding: bool = False  # once the response has begun, an error cannot become a status
    recorded: bool = False  # metrics and the access line are written once, before the last byte
    watch: DisconnectWatch | None = None  # ends the upstream wait if the client leaves

    def stop_watching(self) -> None:
        if self.watch is not None:
            self.watch.stop()

    @property
    def forward(self) -> tuple[tuple[str, str, str], ...]:
        return self.seen.forward if self.seen is not None else ()

    @property
    def route(self) -> str | None:
        """The route of the plan that served (or was to)."""
        return self.plan.decision.route if self.plan is not None else None

    @property
    def model(self) -> str | None:
        """The model served, else the one planned: a failed request counts under the model it
        was for (the one its x-gateway-model header names)."""
        if self.served is not None:
            return self.served.provider.model
        return self.plan.decision.model if self.plan is not None else None
