"""The tests' own vendor key: no key ships with shoal, so every console here trusts this one."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from shoal.core.signing import SigningKey
from shoal.licensing import issue_licence

VENDOR_KEY = SigningKey.generate()


def vendor_public_key_file(directory: Path) -> Path:
    """Write the public half of ``VENDOR_KEY`` into ``directory``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "vendor.key.pub"
    VENDOR_KEY.verify_key.save(path)
    return path


def licence_key(seats: int, expires: date, issued: date, customer: str = "Acme") -> str:
    """A licence key signed by the tests' vendor key."""
    return issue_licence(VENDOR_KEY, customer, seats, expires, issued)
