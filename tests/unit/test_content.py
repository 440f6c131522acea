"""The one rule that flattens message content of any API shape to text."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.content import text_of


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("plain", "plain"),
        (None, ""),
        (42, ""),
        ([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
          {"type": "text", "text": "b"}], "a\nb"),
        ([{"type": "input_text", "text": "responses"}, "stray", 3], "responses"),
        ([{"type": "tool_result", "content": [{"type": "text", "text": "nested"}]}], "nested"),
        ([{"type": "tool_result", "content": "flat"}, {"type": "tool_result"}], "flat"),
        ([{"type": "text", "text": 5}], ""),
    ],
)
def test_text_of(content: Any, text: str) -> None:
    assert text_of(content) == text
