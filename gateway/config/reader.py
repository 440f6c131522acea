"""Reading raw YAML mappings with key paths: typed getters, `$VAR` interpolation, unknown keys.

Every mistake raises `ConfigError` whose message starts with the key path of the bad value, so a
user sees one line that points into their file (`routing.session_ttl_seconds: expected ...`).
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

_ENV_PATTERN = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0, None: 1000.0}


class ConfigError(ValueError):
    """A config mistake; `str()` is the one line shown to the user."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def interpolate(value: str, path: str, environ: Mapping[str, str]) -> str:
    """Replace `$VAR`, `${VAR}` and `${VAR:-default}`; `$$` is a literal dollar."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        if name in environ:
            return environ[name]
        if match.group("default") is not None:
            return match.group("default")
        raise ConfigError(path, f"environment variable {name} is not set")

    if "${" in _ENV_PATTERN.sub("", value):  # `${VAR:?message}`, `${VAR-x}`, `${ VAR }`: kept as text
        raise ConfigError(path, "unsupported ${...} form: use $VAR, ${VAR} or ${VAR:-default} ($$ for a $)")
    return _ENV_PATTERN.sub(replace, value)


def describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kind_of(value: Any) -> str:
    """What a value is, without showing it."""
    kinds = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return "nothing" if value is None else kinds.get(type(value), type(value).__name__)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Node:
    """One mapping of the config file. Getters consume keys; `finish` reports what is left."""

    def __init__(
        self, data: Any, path: str, environ: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(data, Mapping):
            # The type only: a string where a mapping belongs may be a key (`auth.keys: [sk-...]`).
            raise ConfigError(path or "config", f"expected a mapping, got {kind_of(data)}")
        self.data = data
        self.path = path
        self.environ = os.environ if environ is None else environ
        self._seen: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def at(self, key: str | int) -> str:
        return join(self.path, key)

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        return self.data.get(key)

    def child(self, key: str) -> Node | None:
        value = self.raw(key)
        return None if value is None else Node(value, self.at(key), self.environ)

    def string(self, key: str, default: str | None = None, *, required: bool = False,
               choices: tuple[str, ...] = ()) -> str | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise ConfigError(self.at(key), "is required")
            return default
        result = self.text(value, self.at(key))
        if choices and result not in choices:
            raise ConfigError(self.at(key), f"expected one of {', '.join(choices)}, got {result!r}")
        return result

    def text(self, value: Any, path: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(path, f"expected a string, got {describe(value)}")
        return interpolate(str(value), path, self.environ)

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = self.text(value, self.at(key)).strip()
            with contextlib.suppress(ValueError):  # isdigit() admits "²"; int() does not
                value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.at(key), f"expected an integer, got {describe(value)}")
        if not lo <= value <= hi:
            raise ConfigError(self.at(key), f"must be between {lo} and {hi}, got {value}")
        return value

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, str):
            text = self.text(value, self.at(key))
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(self.at(key), f"expected a number, got {text!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.at(key), f"expected a number, got {describe(value)}")
        if not lo <= value <= hi:
            raise ConfigError(self.at(key), f"must be between {lo} and {hi}, got {value}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, str):
            lowered = self.text(value, self.at(key)).strip().lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(self.at(key), f"expected true or false, got {describe(value)}")
        return value

    def duration_ms(self, key: str, default: int, lo: int = 1, hi: int = 86_400_000) -> int:
        """A duration as `30s`, `500ms`, `2m`, or a bare number of seconds."""
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            raise ConfigError(self.at(key), f"expected a duration like 30s, got {value!r}")
        match = _DURATION.match(self.text(value, self.at(key)))
        if match is None:
            raise ConfigError(self.at(key), f"expected a duration like 30s, got {value!r}")
        exact = float(match.group("num")) * _UNIT_MS[match.group("unit")]
        if not math.isfinite(exact):
            raise ConfigError(self.at(key), f"must be at most {hi} ms")
        millis = round(exact)
        if not lo <= millis <= hi:
            raise ConfigError(self.at(key), f"must be between {lo} ms and {hi} ms, got {millis} ms")
        return millis

    def items(self, key: str) -> Iterator[tuple[Any, str]]:
        """The elements of a list value with their paths (nothing if the key is absent)."""
        value = self.raw(key)
        if value is None:
            return
        if not isinstance(value, list):
            raise ConfigError(self.at(key), f"expected a list, got {describe(value)}")
        for index, element in enumerate(value):
            yield element, join(self.at(key), index)

    def strings(self, key: str) -> tuple[str, ...]:
        return tuple(self.text(element, path) for element, path in self.items(key))

    def secret(self, key: str) -> str | None:
        """A key or token. Errors never echo it; surrounding whitespace goes (a key read from a
        file ends in a newline); it must be one line of latin-1, as an HTTP header value."""
        value = self.raw(key)
        return None if value is None else self._secret(value, self.at(key))

    def secrets(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ConfigError(self.at(key), f"expected a list, got a {type(value).__name__}")
        return tuple(self._secret(element, join(self.at(key), index)) for index, element in enumerate(value))

    def _secret(self, value: Any, path: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ConfigError(path, f"expected a string, got a {type(value).__name__}")
        text = interpolate(str(value), path, self.environ).strip()
        if "\n" in text or "\r" in text:
            raise ConfigError(path, "contains a line break")
        if any(ord(char) > 255 for char in text):
            raise ConfigError(path, "must be latin-1 text (it is sent in an HTTP header)")
        return text

    def finish(self, unsupported: Mapping[str, str] | None = None) -> list[str]:
        """Fail on an unknown key; return one warning per known-but-unsupported (Plano) key."""
        unsupported = unsupported or {}
        warnings = []
        for key in self.data:
            if key in self._seen:
                continue
            name = str(key)
            if name in unsupported:
                warnings.append(f"{self.at(name)}: {unsupported[name]}; ignored")
                continue
            known = sorted(self._seen | set(unsupported))
            hint = difflib.get_close_matches(name, known, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(self.at(name), f"unknown key{suffix}")
        return warnings
