"""The builtin router: lexical scores against name, description and examples; pure decisions."""

from __future__ import annotations

import pytest

from gateway.config import RoutingPreference
from gateway.routing import BuiltinRouter, Turn, candidates, latest_turn_text
from tests.unit.test_config import AFFINITY_DEMO, load

PREFERENCES = [
    RoutingPreference("code_generation", "generating new code, writing functions, or creating boilerplate",
                      (), ("m1",)),
    RoutingPreference("complex_reasoning",
                      "complex reasoning tasks, multi-step analysis, or detailed explanations", (), ("m2",)),
]


def user(text: str) -> list[Turn]:
    return [Turn("user", text)]


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("Write a Python function that parses a CSV file", "code_generation"),
        ("generate boilerplate code for a flask app", "code_generation"),
        ("Explain step by step, with detailed analysis, why the plan failed", "complex_reasoning"),
        ("hello there", None),
        ("", None),
    ],
)
def test_routes_by_what_the_latest_turn_says(text: str, route: str | None) -> None:
    assert BuiltinRouter(PREFERENCES).decide(user(text)) == route


def test_threshold_turns_weak_matches_into_no_route() -> None:
    text = "a function"
    assert BuiltinRouter(PREFERENCES, threshold=0.0).decide(user(text)) == "code_generation"
    assert BuiltinRouter(PREFERENCES, threshold=0.99).decide(user(text)) is None


def test_examples_and_names_count() -> None:
    with_examples = [*PREFERENCES, RoutingPreference(
        "translation", "", ("translate this paragraph into French", "say it in German"), ("m3",))]
    router = BuiltinRouter(with_examples)
    assert router.decide(user("please translate the release notes into French")) == "translation"
    spaced = BuiltinRouter([RoutingPreference("code understanding", "explain existing snippets", (), ("m",))])
    assert spaced.decide(user("help me with code understanding")) == "code understanding"


def test_latest_turn_is_the_last_user_message_and_tool_results_after_it() -> None:
    turns = [Turn("system", "you write code"), Turn("user", "write a function"),
             Turn("assistant", "calling a tool"), Turn("tool", "result one"), Turn("tool", "result two")]
    assert latest_turn_text(turns) == "write a function\nresult one\nresult two"
    assert latest_turn_text([Turn("assistant", "hi")]) == ""
    older_user_ignored = [Turn("user", "explain in detail"), Turn("assistant", "ok"),
                          Turn("user", "now write a function")]
    assert BuiltinRouter(PREFERENCES).decide(older_user_ignored) == "code_generation"


def test_deterministic_and_ties_keep_config_order() -> None:
    twins = [RoutingPreference("first", "sorting lists", (), ("a",)),
             RoutingPreference("second", "sorting lists", (), ("b",))]
    router = BuiltinRouter(twins)
    assert {router.decide(user("sorting lists")) for _ in range(20)} == {"first"}
    assert router.scores("sorting lists")[0][1] == router.scores("sorting lists")[1][1]


def test_no_preferences_means_no_route() -> None:
    assert BuiltinRouter([]).decide(user("write code")) is None


def test_fallback_chain() -> None:
    config = load(AFFINITY_DEMO + "model_aliases: {mini: {target: gpt-4o-mini}}\n")
    assert candidates(config, "code_generation", "gpt-4o") == ("anthropic/claude-sonnet-4-20250514",)
    assert candidates(config, None, "mini") == ("openai/gpt-4o-mini",)
    assert candidates(config, None, "gpt-4o") == ("openai/gpt-4o",)
    assert candidates(config, None, None) == ("openai/gpt-4o-mini",)
    assert candidates(config, "no-such-route", None) == ("openai/gpt-4o-mini",)
