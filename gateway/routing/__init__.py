"""Routing: pure decisions from a conversation to a preference (route) and a ranked model list."""

from gateway.routing.base import Decision, RouteChoice, Router, Turn, latest_turn_text
from gateway.routing.builtin import BuiltinRouter
from gateway.routing.chain import candidates

__all__ = [
    "BuiltinRouter",
    "Decision",
    "RouteChoice",
    "Router",
    "Turn",
    "candidates",
    "latest_turn_text",
]
