"""Which session, and which lane of it, a request belongs to (SPEC 4a).

The session key is the first of: the explicit `X-Model-Affinity` header (validated: a bad
one is the client's mistake, a 400); the configured `routing.session_sources` in order (the
signals agent harnesses already send: Claude Code's and Codex's headers, `prompt_cache_key`,
Anthropic `metadata.user_id`, the `previous_response_id` chain); and, when
`routing.implicit_affinity` is on, a fingerprint of the conversation's start. A harness value
is hashed into a key (`hs-` and 32 hex digits), so it is never stored, logged or labelled raw;
a malformed one is skipped, never an error: the client did nothing wrong.

The lane splits a session: a sub-agent (its id in a `routing.lane_headers` header) or a side
call on another model keeps a pin of its own, so it never evicts or borrows the main loop's.

Everything that can be is worked out once, at config time: the request path makes one pass
over the headers, a few dict lookups and, for a harness value, one hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.affinity import validate_affinity_id
from gateway.apis import ClientRequest
from gateway.config import Config
from gateway.config.schema import SessionSource
from gateway.types import Scope

AFFINITY_HEADER = b"x-model-affinity"
# Client headers an upstream of the same family needs to see (new features are opted into
# with them): forwarded as sent.
FORWARDED_HEADERS = {
    b"anthropic-beta": "anthropic",
    b"anthropic-version": "anthropic",
    b"openai-beta": "openai",
}
HARNESS_VALUE_MAX = 1024  # longer is not a session id: skipped
LANE_VALUE_MAX = 256
FINGERPRINT_TEXT_MAX = 4096  # enough of a long system prompt or first message to tell sessions apart
# Claude Code's first system block (`x-anthropic-billing-header: cc_version=2.1.197.<hash>; ...`)
# changes between prompts of one session: a fingerprint leaves it out.
VOLATILE_SYSTEM_LINE = "x-anthropic-billing-header:"

@dataclass(frozen=True, slots=True)
class Session:
    affinity_id: str  # the key pins are stored under: as sent (explicit) or a hash
    source: str  # header | claude-code | codex | session-header | ... | fingerprint
    lane: str  # `agent:<id>` or `model:<requested name>`


@dataclass(frozen=True, slots=True)
class Seen:
    """The request headers sessions and upstreams care about, found in one pass."""

    values: dict[bytes, str]
    forward: tuple[tuple[str, str, str], ...]  # (provider family, name, value) for the upstream


def harness_key(value: str) -> str:
    """A harness's session value as a valid affinity id. The source is left out on purpose:
    Claude Code sends its session both as a header and in `metadata.user_id`, and a request
    that lacks one must still land on the same pin."""
    return "hs-" + hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def usable(value: Any, limit: int = HARNESS_VALUE_MAX) -> str | None:
    """A harness value worth keying on, or None (skipped, never an error)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= limit else None


def metadata_session(user_id: Any) -> str | None:
    """Anthropic `metadata.user_id`: newer Claude Code sends JSON holding `session_id`."""
    value = usable(user_id)
    if value is not None and value.startswith("{"):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if isinstance(parsed, dict):
            return usable(parsed.get("session_id")) or value
    return value


class Sessions:
    def __init__(self, config: Config) -> None:
        routing = config.routing
        self.sources: tuple[SessionSource, ...] = routing.session_sources
        self.implicit = routing.implicit_affinity
        self.lane_headers = tuple(name.encode() for name in routing.lane_headers)
        wanted = {AFFINITY_HEADER, *self.lane_headers, *FORWARDED_HEADERS}
        for source in self.sources:
            wanted.update(name.encode() for name in source.headers)
        self.wanted = frozenset(wanted)
        # The walk, worked out once: (source name, its header names, its body field). The
        # previous-response source is not a key but a model: the decider sends a follow-up
        # that no other source placed back to the model that produced what it continues.
        self._walk = tuple(
            (source.name, tuple(name.encode() for name in source.headers), source.body)
            for source in self.sources
            if source.body != "previous_response_id"
        )

    def scan(self, scope: Scope) -> Seen:
        values: dict[bytes, str] = {}
        forward: list[tuple[str, str, str]] = []
        wanted = self.wanted
        for name, value in scope["headers"]:
            if name in wanted:
                text = value.decode("latin-1")
                family = FORWARDED_HEADERS.get(name)
                if family is not None:
                    forward.append((family, name.decode(), text))
                values.setdefault(name, text)
        return Seen(values, tuple(forward))

    def find(self, seen: Seen, request: ClientRequest, tenant: str) -> Session | None:
        """The request's session, or None: routing runs fresh every time."""
        values = seen.values
        lane = self.lane(values, request)
        explicit = values.get(AFFINITY_HEADER)
        if explicit is not None:
            return Session(validate_affinity_id(explicit), "header", lane)
        payload = request.payload
        for name, headers, body in self._walk:
            value: str | None = None
            if values:
                for header_name in headers:
                    found = values.get(header_name)
                    if found is not None and (value := usable(found)) is not None:
                        break
            if value is None and body is not None:
                if body == "prompt_cache_key":
                    value = usable(payload.get("prompt_cache_key"))
                elif body == "metadata.user_id":
                    metadata = payload.get("metadata")
                    value = metadata_session(metadata.get("user_id")) if isinstance(metadata, dict) else None
            if value is not None:
                return Session(harness_key(value), name, lane)
        if self.implicit:
            return Session(harness_key(fingerprint(tenant, request)), "fingerprint", lane)
        return None

    def lane(self, values: dict[bytes, str], request: ClientRequest) -> str:
        if values:
            for name in self.lane_headers:
                agent = usable(values.get(name), LANE_VALUE_MAX)
                if agent is not None:
                    return "agent:" + agent
        return "model:" + (request.requested_model or "")


def fingerprint(tenant: str, request: ClientRequest) -> str:
    """What stays the same for every turn of one conversation: the tenant, the system prompt,
    the tool names and the first user message."""
    system = "\n".join(turn.text for turn in request.turns if turn.role == "system")
    if VOLATILE_SYSTEM_LINE in system:
        lines = system.splitlines()
        system = "\n".join(line for line in lines if not line.startswith(VOLATILE_SYSTEM_LINE))
    first_user = next((turn.text for turn in request.turns if turn.role == "user"), "")
    return "\0".join((
        "fingerprint", tenant, system[:FINGERPRINT_TEXT_MAX], ",".join(tool_names(request.payload)),
        first_user[:FINGERPRINT_TEXT_MAX],
    ))


def tool_names(payload: dict[str, Any]) -> list[str]:
    """Tool names in either API's shape (`{"function": {"name"}}` or `{"name"}`)."""
    names = []
    tools = payload.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str):
            names.append(name)
    return names
