"""The shell's copy of the last registration answer (``kept_registration``)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from shoal.client.kept_registration import (
    KEPT_REGISTRATION_FILE,
    load_registration,
    save_registration,
)
from shoal.wire.control import LicenceState, OfficeType, Registered

ANSWER = Registered(
    "1.2.3", "paris", OfficeType.WIFI, 60, 41440, 41442, 41443, LicenceState.OVERAGE, 3,
    (41540, 0, 41542, 41543), 8000, 2000, 2,
)  # fmt: skip


def test_the_kept_answer_comes_back_whole_for_the_same_address_only(tmp_path: Path) -> None:
    path = tmp_path / KEPT_REGISTRATION_FILE
    save_registration(path, ANSWER, "10.1.0.7")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_registration(path, "10.1.0.7") == ANSWER
    # Another address (the laptop moved office): the kept answer is not this one's.
    assert load_registration(path, "10.2.0.7") is None


def test_no_file_means_waiting_and_an_unreadable_one_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / KEPT_REGISTRATION_FILE
    assert load_registration(path, "10.1.0.7") is None
    path.write_text('{"ip": "10.1.0.7", "office_type": "NOT_A_TYPE"}')
    with caplog.at_level(logging.WARNING, logger="shoal.client"):
        assert load_registration(path, "10.1.0.7") is None
    assert "unreadable" in caplog.text
