"""The shell's copy of the last accepted assignment document (``kept_assignments``)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from shoal.client.kept_assignments import KEPT_FILE, load_kept, save_kept


def test_the_kept_document_comes_back_byte_for_byte_and_only_its_owner_reads_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / KEPT_FILE
    document = bytes(range(256)) * 40  # any bytes: the envelope is checked when taken
    save_kept(path, document)
    assert load_kept(path) == document
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    save_kept(path, b"the next one")
    assert load_kept(path) == b"the next one"


def test_no_file_means_a_fetch_and_an_unreadable_one_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / KEPT_FILE
    assert load_kept(path) is None
    path.write_text('{"document": "not base64!"}')
    with caplog.at_level(logging.WARNING, logger="shoal.client"):
        assert load_kept(path) is None
    assert "unreadable" in caplog.text and "will be fetched" in caplog.text
