"""How every long-lived shoal process logs: one event per line, text or JSON.

The standard library's ``logging`` with a formatter of our own, not structlog: every
module already logs through ``logging.getLogger(...)`` (and uvicorn, httpx and SQLAlchemy
do too), so one formatter on the root handler makes all of them structured at once, with
no second logging API to learn and no new dependency. Fields are passed the stdlib way,
``log.warning("...", extra={"cause": ..., "fix": ...})``; both formats print them.

- ``text``: ``2026-12-03T14:56:31.123Z WARNING shoal.server: message key=value ...``
- ``json``: ``{"time": ..., "level": ..., "logger": ..., "event": ..., "key": value}``

``RepeatFilter`` keeps a stuck condition from flooding the log: a warning whose text is
the same as the last one of its kind (same logger, same format string) is held back and
counted; the count is printed with the next one that differs, or at least every
``REPEAT_INTERVAL`` seconds while it lasts.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

LOG_FORMATS = ("text", "json")
REPEAT_INTERVAL = 300.0

# Attributes every LogRecord has: anything else on a record came in through ``extra``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries (its ``extra``), in the order given."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            document.setdefault(key, _plain(value))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``; a traceback stays on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record.created)} {record.levelname} {record.name}: "
        line += record.getMessage()
        extras = " ".join(f"{key}={_text(value)}" for key, value in fields_of(record).items())
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or " " in text or '"' in text) else text


class RepeatFilter(logging.Filter):
    """Hold back a warning identical to the last of its kind; count it instead.

    "Its kind" is the logger and the format string, so ``"console sync failed: %s"``
    with a new cause is a change (printed at once, with how often the previous cause
    was repeated), and the same cause again is a repeat.
    """

    def __init__(self, interval: float = REPEAT_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        # (logger, format string) -> [last text, repeats held back, when last printed]
        self._last: dict[tuple[str, str], list[Any]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg))
        text = record.getMessage()
        last = self._last.get(kind)
        if last is None or last[0] != text:
            if last is not None and last[1]:
                record.previous_repeated = last[1]
            self._last[kind] = [text, 0, record.created]
            if len(self._last) > 10_000:  # bounded: forget the oldest kinds
                self._last.pop(next(iter(self._last)))
            return True
        last[1] += 1
        if record.created - last[2] >= self.interval:
            record.repeated = last[1]
            last[1], last[2] = 0, record.created
            return True
        return False


def configure(level: str = "info", log_format: str = "text") -> None:
    """Set up the root logger of a shoal process (replacing any earlier set-up)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: choose one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One line per HTTPS request to the console is noise at "info".
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
