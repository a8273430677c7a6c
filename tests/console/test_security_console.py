"""Regression tests for the console rows of issue 13's attack table (5, 10, 11, 12, 13).

Each test replays the attack as the issue describes it and asserts what the user cares
about: the console keeps working for everyone else and refuses the attacker clearly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

import shoal
from shoal.console.state import ConsoleConfig, ConsoleConfigError, open_console
from shoal.core.signing import SigningKey
from shoal.licensing import issue_licence

from .conftest import Harness

# --- row 12: a development vendor key shipped in the package ---------------------------


def test_attack_12_no_development_vendor_key_is_shipped_or_trusted(
    console: Harness, tmp_path: Path
) -> None:
    package = Path(shoal.__file__).parent
    private_keys = [
        path.relative_to(package)
        for path in package.rglob("*")
        if path.is_file() and b"PRIVATE KEY-----" in path.read_bytes()
    ]
    assert private_keys == [], "a private key ships in the package"

    # A console told of no vendor key refuses to start, says what to give, creates nothing.
    with pytest.raises(ConsoleConfigError, match="--vendor-public-key"):
        open_console(ConsoleConfig(data_dir=tmp_path / "bare"))
    assert not (tmp_path / "bare").exists()
    environment = {
        name: value for name, value in os.environ.items() if name != "SHOAL_VENDOR_PUBLIC_KEY"
    }
    started = subprocess.run(
        [sys.executable, "-m", "shoal", "console", "--data-dir", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert started.returncode != 0
    assert "no vendor public key" in started.stderr and "Traceback" not in started.stderr

    # A million seats signed by any key but the configured vendor's is refused.
    forged = issue_licence(
        SigningKey.generate(), "Mallory", 1_000_000, date(2099, 1, 1), date(2026, 1, 1)
    )
    answer = console.put("/api/v1/license", json={"key": forged})
    assert answer.status_code == 422 and "trusts vendor key" in answer.json()["detail"]
    licence = console.get("/api/v1/license").json()
    assert licence["state"] == "none" and licence["seats"] == 0

    # The console refuses to be handed the vendor's private key instead of the public one.
    private = tmp_path / "vendor.key"
    SigningKey.generate().save(private)
    with pytest.raises(ConsoleConfigError, match="private key"):
        open_console(ConsoleConfig(data_dir=tmp_path / "given", vendor_public_key=private))
