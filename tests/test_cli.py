"""The command line as a user meets it: JSON on stdout, one-line errors, exit codes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shoal import __version__


def shoal(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "shoal", *map(str, args)], capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"shoal {args} failed: {result.stderr}")
    return result


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_version_and_help_on_every_command() -> None:
    assert __version__ in shoal("--version").stdout
    for command in (
        ["pack"],
        ["keygen"],
        ["verify"],
        ["store", "list"],
        ["store", "check"],
        ["store", "repair"],
        ["store", "import"],
        ["bench", "pack"],
    ):
        help_text = shoal(*command, "--help").stdout
        assert "Usage:" in help_text
        assert len(help_text.splitlines()) > 3


def test_pack_prints_the_manifest_fields_and_writes_the_manifest(tmp_path: Path) -> None:
    package = tmp_path / "app.msi"
    package.write_bytes(b"installer" * 50_000)
    summary = json.loads(shoal("pack", package, "--chunk-size", "64K", "--out", tmp_path).stdout)
    assert summary["size"] == 450_000
    assert summary["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
    assert summary["chunk_size"] == 65536
    assert summary["chunks"] == 7
    assert summary["signed"] is False
    manifest = Path(summary["manifest"])
    assert manifest.name == f"{summary['content_id']}.manifest"
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == summary["content_id"]


def test_signed_pack_verifies_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "console.key"
    shoal("keygen", key)
    package = tmp_path / "app.zip"
    package.write_bytes(bytes(range(256)) * 1000)
    summary = json.loads(shoal("pack", package, "--key", key, "--out", tmp_path).stdout)
    assert summary["signed"] is True
    checked = json.loads(
        shoal("verify", summary["manifest"], "--key", f"{key}.pub", "--file", package).stdout
    )
    assert checked["content_id"] == summary["content_id"]
    package.write_bytes(bytes(range(256)) * 999)
    result = shoal(
        "verify", summary["manifest"], "--key", f"{key}.pub", "--file", package, check=False
    )
    assert_one_line_error(result, "does not match manifest")


def test_an_unsigned_manifest_is_refused_when_a_key_is_given(tmp_path: Path) -> None:
    shoal("keygen", tmp_path / "k")
    package = tmp_path / "p"
    package.write_bytes(b"x")
    manifest = json.loads(shoal("pack", package, "--out", tmp_path).stdout)["manifest"]
    assert_one_line_error(
        shoal("verify", manifest, "--key", tmp_path / "k.pub", check=False), "not signed"
    )


def test_a_zero_byte_file_is_valid_content(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    summary = json.loads(shoal("pack", empty, "--out", tmp_path).stdout)
    assert summary["size"] == 0
    assert summary["chunks"] == 0
    assert summary["sha256"] == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["pack", "{tmp}/missing.msi"], ["missing.msi", "no such file"]),
        (["pack", "{tmp}"], ["is a directory"]),
        (["pack", "{tmp}/file", "--chunk-size", "100000"], ["chunk size 100000", "power of two"]),
        (["pack", "{tmp}/file", "--chunk-size", "32K"], ["power of two"]),
        (["pack", "{tmp}/file", "--chunk-size", "big"], ["not a size"]),
        (["pack", "{tmp}/file", "--key", "{tmp}/nokey"], ["nokey", "key file not found"]),
        (["pack", "{tmp}/file", "--key", "{tmp}/file"], ["not a PEM private key"]),
        (["verify", "{tmp}/file"], ["not a shoal manifest"]),
        (["store", "list", "{tmp}/nostore"], ["no such store directory"]),
    ],
)
def test_bad_input_gets_a_one_line_error(
    tmp_path: Path, arguments: list[str], words: list[str]
) -> None:
    (tmp_path / "file").write_bytes(b"some bytes")
    result = shoal(*[argument.format(tmp=tmp_path) for argument in arguments], check=False)
    assert_one_line_error(result, *words)


def test_a_corrupt_sidecar_is_one_line_and_repair_fixes_it(tmp_path: Path) -> None:
    package = tmp_path / "p"
    package.write_bytes(bytes(300_000))
    manifest = json.loads(shoal("pack", package, "--chunk-size", "64K", "--out", tmp_path).stdout)
    store_dir = tmp_path / "store"
    shoal("store", "import", store_dir, package, manifest["manifest"])
    (store_dir / f"{manifest['content_id']}.state").write_text("garbage")
    assert_one_line_error(shoal("store", "list", store_dir, check=False), ".state", "sidecar")
    repaired = json.loads(shoal("store", "repair", store_dir).stdout.splitlines()[0])
    assert repaired["complete"] is True
    assert json.loads(shoal("store", "check", store_dir).stdout)["chunks_checked"] == 5


def test_the_command_line_does_not_load_the_console_stack() -> None:
    """`shoal pack` must stay small (RSS <= 64 MB): heavy stacks load only when used."""
    heavy = ("sqlalchemy", "fastapi", "uvicorn", "alembic", "httpx", "matplotlib")
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, shoal.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == ""


def test_every_command_module_is_listed_by_name_for_lazy_loading() -> None:
    """`shoal NAME` imports the module ``COMMAND_MODULES`` names: each module's commands
    are exactly the names that point to it, so none is missing from `shoal --help`."""
    import importlib

    from shoal.cli import COMMAND_MODULES

    for module_name in set(COMMAND_MODULES.values()):
        module = importlib.import_module(module_name)
        listed = {name for name, owner in COMMAND_MODULES.items() if owner == module_name}
        assert {command.name for command in module.COMMANDS} == listed, module_name
    help_text = shoal("--help").stdout
    assert all(f"  {name} " in help_text for name in COMMAND_MODULES)
