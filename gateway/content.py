"""Message content as plain text: the one flattening rule for every API shape.

A content is a string, or a list of parts/blocks (OpenAI `text`/`input_text`/`output_text`
parts, Anthropic `text` and `tool_result` blocks); anything else has no text. Parts are
joined with a line break, so words of adjacent parts never run together.
"""

from __future__ import annotations

from typing import Any


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif part.get("type") == "tool_result":  # its result nests a content of its own
            nested = text_of(part.get("content"))
            if nested:
                texts.append(nested)
    return "\n".join(texts)
