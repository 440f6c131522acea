"""Logging: one JSON line per request for machines, plain text on a terminal for humans.

Secrets never reach a log line: nothing here formats headers, bodies or config values, and
affinity ids appear only as a short hash.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from typing import Any

import orjson

ACCESS_LOGGER = "gateway.access"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", None)
        extra = " ".join(f"{k}={v}" for k, v in fields.items()) if fields else ""
        return f"{stamp} {record.levelname:<7} {record.getMessage()} {extra}".rstrip()


def use_json(fmt: str) -> bool:
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def setup_logging(level: str, fmt: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json(fmt) else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers go through the same handler and format.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def short_hash(affinity_id: str) -> str:
    """Enough to correlate a session's lines, never enough to recover or replay its id."""
    return hashlib.blake2b(affinity_id.encode(), digest_size=6).hexdigest()


class AccessLog:
    """One line per request. In JSON mode the line is written straight to stderr: it is on every
    request's path, and building a LogRecord and formatting it costs several times more."""

    def __init__(self, fmt: str = "auto") -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.json = use_json(fmt)

    def request(self, **fields: Any) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        if self.json:
            line = {"ts": round(time.time(), 3), "level": "info", "logger": ACCESS_LOGGER,
                    "msg": "request", **fields}
            sys.stderr.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE).decode())
        else:
            self.logger.info("request", extra={"fields": fields})
