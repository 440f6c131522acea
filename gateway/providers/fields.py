"""Typed reads of a client's request fields for the translators: a field that is absent or
null reads as empty, one of the wrong JSON type is a 400 that names it (`param`), so no
translator meets a number where it iterates or a list where it calls `.get`.

Same-API requests are not read this way: the provider of the client's own API judges them.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest


def wrong_type(where: str, expected: str) -> BadRequest:
    return BadRequest(f"'{where}' must be {expected}", param=where, code="invalid_type")


def array(value: Any, where: str) -> list[Any]:
    """A list, or [] for absent/null."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise wrong_type(where, "an array")
    return value


def mapping(value: Any, where: str) -> dict[str, Any]:
    """An object, or {} for absent/null."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise wrong_type(where, "an object")
    return value


def string(value: Any, where: str, default: str = "") -> str:
    """A string, or `default` for absent/null."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise wrong_type(where, "a string")
    return value


def objects(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """A list of objects with their paths (`where[i]`); an element that is not one is a 400."""
    out = []
    for i, element in enumerate(array(value, where)):
        here = f"{where}[{i}]"
        if not isinstance(element, dict):
            raise wrong_type(here, "an object")
        out.append((here, element))
    return out
