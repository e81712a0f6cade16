"""One-line structured logs: ``ts=... level=info event=push.sent peer=... n=3``.

Every line is ``key=value`` pairs (values with spaces are quoted), so logs are
both readable and greppable. Exceptions from bad input are never logged with
a traceback; only a node bug reaches ``log.exception``.
"""

from __future__ import annotations

import logging
import sys
import time

_LOGGER = logging.getLogger("crdtbook")


def _format_value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        fields = getattr(record, "fields", {})
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"event={record.getMessage()}"]
        parts.extend(f"{k}={_format_value(v)}" for k, v in fields.items())
        if record.exc_info:
            parts.append(f"error={_format_value(repr(record.exc_info[1]))}")
        return " ".join(parts)


def setup(level: str = "info", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_LineFormatter())
    _LOGGER.handlers[:] = [handler]
    _LOGGER.setLevel(level.upper())
    _LOGGER.propagate = False


def log(level: int, event: str, **fields: object) -> None:
    if _LOGGER.isEnabledFor(level):
        _LOGGER.log(level, event, extra={"fields": fields})


def info(event: str, **fields: object) -> None:
    log(logging.INFO, event, **fields)


def debug(event: str, **fields: object) -> None:
    log(logging.DEBUG, event, **fields)


def warning(event: str, **fields: object) -> None:
    log(logging.WARNING, event, **fields)


def error(event: str, **fields: object) -> None:
    log(logging.ERROR, event, **fields)


LEVELS = ("debug", "info", "warning", "error")
