"""LaneIndex: the lanes a replica has seen per session, bounded in sessions and in lanes."""

from __future__ import annotations

from gateway.affinity.lanes import LaneIndex


def test_past_the_most_lanes_the_oldest_go_but_never_the_first() -> None:
    """The first lane is a harness's main loop: dropped from the listing, an admin DELETE of
    the session would say it worked and leave the main loop pinned."""
    index = LaneIndex(max_lanes=3)
    for lane in ("model:main", "agent:1", "agent:2", "agent:3", "agent:4"):
        index.saw("t", "s", lane)
    assert index.lanes("t", "s") == ["model:main", "agent:3", "agent:4"]
    index.saw("t", "s", "agent:3")  # seen again: no move, no duplicate
    assert index.lanes("t", "s") == ["model:main", "agent:3", "agent:4"]


def test_the_least_recently_seen_session_is_forgotten_first() -> None:
    index = LaneIndex(max_sessions=2)
    index.saw("t", "a", "")
    index.saw("t", "b", "")
    index.saw("t", "a", "agent:1")  # a is seen again: b is now the oldest
    index.saw("t", "c", "")
    assert index.lanes("t", "b") == [] and index.lanes("t", "a") == ["", "agent:1"]
    index.forget("t", "a")
    assert index.lanes("t", "a") == []
