"""The lanes this replica has seen per session, so the admin API can list a session's pins
without a scan of the store. Bounded (oldest sessions forgotten first) and per replica: with
the memory store that is every lane; with Redis it adds to the lane sets Redis keeps for every
replica (see `redis.py`) what they may miss (a set dropped by the cap, or that expired while
sliding-TTL hits kept its pins)."""

from __future__ import annotations

from collections import OrderedDict

MAX_SESSIONS = 10_000
# Per session: a harness with more sub-agents than this lists its first lane (the main loop,
# pinned first) and the newest others.
MAX_LANES = 32


class LaneIndex:
    def __init__(self, max_sessions: int = MAX_SESSIONS, max_lanes: int = MAX_LANES) -> None:
        self.max_sessions = max_sessions
        self.max_lanes = max_lanes
        # (tenant, session id) -> its lanes, least recently seen session first. A tuple key, not
        # a hash: this runs on every request with a session.
        self._lanes: OrderedDict[tuple[str, str], list[str]] = OrderedDict()

    def saw(self, tenant: str, affinity_id: str, lane: str) -> None:
        session = (tenant, affinity_id)
        lanes = self._lanes.get(session)
        if lanes is None:
            self._lanes[session] = [lane]
            if len(self._lanes) > self.max_sessions:
                self._lanes.popitem(last=False)
            return
        self._lanes.move_to_end(session)
        if lane not in lanes:
            lanes.append(lane)
            if len(lanes) > self.max_lanes:
                del lanes[1]  # the oldest but the first: the main loop stays listed

    def lanes(self, tenant: str, affinity_id: str) -> list[str]:
        return list(self._lanes.get((tenant, affinity_id), ()))

    def forget(self, tenant: str, affinity_id: str) -> None:
        self._lanes.pop((tenant, affinity_id), None)
