"""Licence keys: signing, tampering, expiry and overage messages; the CLI."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, date, datetime

import pytest

from shoal.core.signing import SigningKey
from shoal.licensing import (
    LicenceMalformed,
    LicenceSignatureInvalid,
    LicenceState,
    evaluate,
    issue_licence,
    read_licence,
)

VENDOR = SigningKey.generate()
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_issued_key_reads_back():
    key = issue_licence(VENDOR, "Acme", 50, date(2027, 1, 31), date(2026, 1, 1))
    licence = read_licence(key, VENDOR.verify_key)
    assert (licence.customer, licence.seats, licence.expires) == ("Acme", 50, date(2027, 1, 31))


def test_tampered_key_is_refused():
    key = issue_licence(VENDOR, "Acme", 5, date(2027, 1, 31), date(2026, 1, 1))
    prefix, payload, signature = key.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=="))
    fields["seats"] = 5000
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    with pytest.raises(LicenceSignatureInvalid, match="changed after issue"):
        read_licence(f"{prefix}.{forged}.{signature}", VENDOR.verify_key)
    with pytest.raises(LicenceMalformed):
        read_licence(key[:-30], VENDOR.verify_key)


def test_status_reports_overage_and_expiry():
    licence = read_licence(
        issue_licence(VENDOR, "Acme", 10, date(2026, 6, 30), date(2026, 1, 1)), VENDOR.verify_key
    )
    fine = evaluate(licence, 10, NOW)
    assert fine.state is LicenceState.VALID and fine.seats_over == 0 and fine.days_left == 29
    over = evaluate(licence, 13, NOW)
    assert over.state is LicenceState.OVERAGE and over.active and over.seats_over == 3
    assert "3 seats over the licence (13 used of 10)" in over.message
    last_day = evaluate(licence, 1, datetime(2026, 6, 30, 23, 59, tzinfo=UTC))
    assert last_day.active
    expired = evaluate(licence, 12, datetime(2026, 7, 1, tzinfo=UTC))
    assert expired.state is LicenceState.EXPIRED and not expired.active
    assert "expired on 2026-06-30 (1 day ago)" in expired.message
    assert "2 seats over" in expired.message
    assert not evaluate(None, 0, NOW).active


def test_cli_issues_a_key_the_console_accepts(tmp_path):
    vendor = tmp_path / "vendor.pem"
    SigningKey.generate().save(vendor)
    issued = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal",
            "license",
            "issue",
            "--seats",
            "7",
            "--expires",
            "2030-01-01",
            "--customer",
            "Initech",
            "--vendor-key",
            str(vendor),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    inspected = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal",
            "license",
            "inspect",
            issued,
            "--vendor-key",
            str(vendor),
            "--seats-used",
            "9",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    status = json.loads(inspected)
    assert status["customer"] == "Initech" and status["seats"] == 7 and status["seats_over"] == 2
    other = tmp_path / "other.pem"
    SigningKey.generate().save(other)
    refused = subprocess.run(
        [sys.executable, "-m", "shoal", "license", "inspect", issued, "--vendor-key", str(other)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "trusts vendor key" in refused.stderr and "Traceback" not in refused.stderr
    issue_without_key = ["license", "issue", "--seats", "1000000", "--expires", "2030-01-01"]
    unsigned = subprocess.run(
        [sys.executable, "-m", "shoal", *issue_without_key],
        capture_output=True,
        text=True,
    )
    assert unsigned.returncode == 2 and "--vendor-key" in unsigned.stderr
