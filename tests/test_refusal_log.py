"""Each refusal is logged once per (device, cause), with what to do (issue 12)."""

from __future__ import annotations

import logging

import pytest

from shoal.server.refusal_log import FIX, RefusalLog
from shoal.wire.control import RefusalCause, Refused


def test_a_refusal_repeated_is_one_line_with_its_fix_until_the_cause_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = RefusalLog()
    device = bytes(range(32))
    version = Refused(RefusalCause.VERSION_UNSUPPORTED, "client 0.0.1 is too old: upgrade it")
    licence = Refused(RefusalCause.NOT_LICENSED, "no licence seat for this device")
    with caplog.at_level(logging.WARNING, logger="shoal.server.refusals"):
        # One refusal 5 times in one millisecond (the example): one line.
        assert refusals.log([(device, ("10.1.0.5", 4000), version)] * 5) == 1
        assert refusals.log([(device, ("10.1.0.5", 4000), version)]) == 0
        assert refusals.log([(device, ("10.1.0.5", 4000), licence)]) == 1
    first, second = caplog.records
    assert "upgrade it" in first.getMessage()
    assert first.__dict__["cause"] == "version_unsupported"
    assert first.__dict__["fix"] == FIX[RefusalCause.VERSION_UNSUPPORTED]
    assert second.__dict__["fix"].startswith("add seats")


def test_every_cause_says_what_to_do() -> None:
    assert set(FIX) == set(RefusalCause)
