"""The interop run's affinity checks (interop/report.py), on recorded exchanges: what makes
`make interop` exit non-zero without the real CLIs."""

from __future__ import annotations

from interop.capture import Exchange
from interop.report import check


def exchange(session: str, status: str, model: str = "anthropic/m", agent: str | None = None,
             code: int = 200) -> Exchange:
    headers = {"x-claude-code-session-id": session} | ({"x-claude-code-agent-id": agent} if agent else {})
    answer = {"x-gateway-model": model, "x-model-affinity-status": status,
              "x-model-affinity-source": "claude-code"}
    return Exchange(seq=0, harness="claude-code", target="gateway", replica=1, method="POST",
                    path="/v1/messages", query="", headers=headers, body={"model": "claude-opus-4-8"},
                    status=code, response_headers=answer)


def test_one_model_per_lane_new_then_hit_passes() -> None:
    run = [exchange("s1", "new"), exchange("s2", "new"), exchange("s1", "hit"),
           exchange("s1", "new", "openai/x", agent="a1"), exchange("s1", "hit", "openai/x", agent="a1")]
    assert check(run, {}) == []


def test_a_session_that_finds_a_pin_it_never_made_shares_pins() -> None:
    problems = check([exchange("s1", "new"), exchange("s2", "hit")], {})
    assert len(problems) == 1 and "s2" in problems[0] and "want new, then hit" in problems[0]


def test_a_lane_that_switches_model_or_fails_or_loses_its_pin_is_reported() -> None:
    run = [exchange("s1", "new"), exchange("s1", "hit", "openai/x"), exchange("s1", "none"),
           exchange("s1", "hit", code=502)]
    problems = check(run, {})
    assert any("2 models served" in p for p in problems)
    assert any("non-2xx" in p for p in problems)
    assert any("statuses in order new hit none hit" in p for p in problems)


def test_prompt_and_cached_tokens_are_read_from_every_api_shape() -> None:
    from interop.capture import Usage
    from interop.usage import from_body

    chat = b'{"usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 4}}}'
    responses = b'{"response": {"usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 3}}}}'
    anthropic_stream = (
        b'data: {"type": "message_start", "message": {"usage": {"input_tokens": 2, '
        b'"cache_read_input_tokens": 6, "cache_creation_input_tokens": 1}}}\n\n'
        b'data: {"type": "message_delta", "usage": {"output_tokens": 5}}\n\n')
    assert from_body(chat, "application/json") == Usage(10, 4)
    assert from_body(responses, "application/json") == Usage(9, 3)
    assert from_body(anthropic_stream, "text/event-stream") == Usage(9, 6)
    assert from_body(b"<html>", "text/html") is None
