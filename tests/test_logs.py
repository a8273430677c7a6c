"""Structured logging: one event per line with its fields; repeats counted (issue 12)."""

from __future__ import annotations

import io
import json
import logging

from shoal.logs import JsonFormatter, RepeatFilter, TextFormatter


def _logger(
    formatter: logging.Formatter, interval: float = 300.0
) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter(interval))
    logger = logging.getLogger(f"shoal.test.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_the_event_and_its_fields() -> None:
    logger, stream = _logger(JsonFormatter())
    logger.warning("refused device %s", "ab12", extra={"cause": "not_licensed", "fix": "add seats"})
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "refused device ab12"
    assert event["level"] == "warning" and event["cause"] == "not_licensed"
    assert event["fix"] == "add seats" and event["time"].endswith("Z")


def test_text_lines_end_with_key_value_fields() -> None:
    logger, stream = _logger(TextFormatter())
    logger.info("listening", extra={"port": 8443, "note": "two words"})
    assert stream.getvalue().rstrip().endswith('listening port=8443 note="two words"')


def test_a_repeated_warning_is_logged_once_then_counted_when_it_changes() -> None:
    logger, stream = _logger(JsonFormatter())
    for _ in range(8):  # the wrong-key server of the issue: 8 identical warnings
        logger.warning("console sync failed: %s", "wrong authentication key")
    logger.warning("console sync failed: %s", "connection refused")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [event["event"] for event in events] == [
        "console sync failed: wrong authentication key",
        "console sync failed: connection refused",
    ]
    assert events[1]["previous_repeated"] == 7


def test_a_lasting_repeat_is_logged_again_with_its_count_after_the_interval() -> None:
    logger, stream = _logger(JsonFormatter(), interval=0.0)
    logger.warning("same")
    logger.warning("same")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(events) == 2 and events[1]["repeated"] == 1


def test_info_lines_are_never_held_back() -> None:
    logger, stream = _logger(TextFormatter())
    for _ in range(3):
        logger.info("tick")
    assert len(stream.getvalue().splitlines()) == 3
