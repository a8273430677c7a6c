"""shoal's one small-file writer: whole old or whole new, the mode asked for, no debris."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shoal.core import files


def test_a_private_file_is_owner_only_even_under_an_open_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        files.write_private(tmp_path / "keys" / "device.key", b"secret")
        files.write_durably(tmp_path / "settings.toml", b"a = 1\n", mode=0o644)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "keys" / "device.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "settings.toml").stat().st_mode) == 0o644


def test_a_readable_file_keeps_its_mode_under_a_strict_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        files.write_durably(tmp_path / "settings.toml", b"a = 1\n", mode=0o644)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "settings.toml").stat().st_mode) == 0o644


def test_rewriting_replaces_the_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    files.write_durably(target, b"old")
    files.write_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    files.write_durably(target, b"old")

    def no_space(_descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError):
        files.write_durably(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.json"]
