"""Enrollment: what a device learns once, from a file, and never from the LAN.

The console makes one enrollment bundle per P2P server (``GET /api/v1/servers/ID/
enrollment-bundle``)::

    {"format": "shoal-enrollment-1", "console_key": HEX (raw Ed25519, 32 B),
     "console_cert_sha256": "AB:CD:..." | null, "enrollment_token": HEX (16 B),
     "server": "IP", "server_port": PORT,
     "ports": {"discovery": P, "control": P, "foreground_data": P,
               "background_data": P} | null}

``shoal client enroll BUNDLE`` (or ``shoal client run --enrollment BUNDLE`` at first
start) pins ``console_key`` in ``DATA_DIR/trust.json`` (``TrustState``) and keeps the
token, the server's address and the console's ports in ``DATA_DIR/enrollment.json``,
mode 0600 (the console's later port changes arrive from the server and win). The token
is a secret: it is read from these files only, never from a command line, and never
logged. Enrolling again with another console key is refused unless asked for
(``replace=True``): it changes what the device trusts.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.client.trust import TRUST_FILE, TrustState, TrustStateError
from shoal.core.errors import ShoalError
from shoal.core.files import write_private

ENROLLMENT_FILE = "enrollment.json"
BUNDLE_FORMAT = "shoal-enrollment-1"


class EnrollmentError(ShoalError):
    """The bundle or the enrollment files are missing, malformed, or conflict."""


@dataclass(frozen=True, slots=True)
class Enrollment:
    console_key: bytes
    enrollment_token: bytes
    server: str
    server_port: int
    ports: tuple[int, int, int] | None = None
    """Discovery, foreground data and background data ports the console had set."""
    console_cert_sha256: str | None = None

    def __repr__(self) -> str:  # never print the token (a traceback, a log line)
        return (
            f"Enrollment(console_key={self.console_key.hex()[:16]}..., server={self.server}:"
            f"{self.server_port}, enrollment_token=<secret>)"
        )


def parse_bundle(document: Any) -> Enrollment:
    """The bundle's fields, checked (``EnrollmentError`` says what is wrong)."""
    try:
        if document.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format {document.get('format')!r} is not {BUNDLE_FORMAT}")
        console_key = bytes.fromhex(document["console_key"])
        token = bytes.fromhex(document["enrollment_token"])
        server = str(ipaddress.IPv4Address(document["server"]))
        port = int(document["server_port"])
        if len(console_key) != 32 or len(token) < 16 or not 0 < port < 65536:
            raise ValueError("a console key of 32 bytes, a token of 16, a port in 1..65535")
        ports = _ports(document.get("ports"))
        fingerprint = document.get("console_cert_sha256")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError("console_cert_sha256 must be a string")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise EnrollmentError(f"not an enrollment bundle: {error}") from None
    return Enrollment(console_key, token, server, port, ports, fingerprint)


def _ports(document: Any) -> tuple[int, int, int] | None:
    if document is None:
        return None
    ports = (
        int(document["discovery"]),
        int(document["foreground_data"]),
        int(document["background_data"]),
    )
    if not all(0 < port < 65536 for port in ports):
        raise ValueError(f"ports out of 1..65535: {ports}")
    return ports


def read_bundle(path: Path) -> Enrollment:
    try:
        return parse_bundle(json.loads(path.read_text()))
    except OSError as error:
        raise EnrollmentError(f"{path}: cannot read the bundle ({error.strerror})") from None
    except ValueError as error:
        raise EnrollmentError(f"{path}: not JSON ({error})") from None


def enroll(data_dir: Path, bundle: Enrollment, *, replace: bool = False) -> Enrollment:
    """Pin the bundle's console key and keep its token (0600) in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        trust: TrustState | None = TrustState.load(data_dir / TRUST_FILE)
    except TrustStateError:
        trust = None
    if trust is not None and bundle.console_key not in trust.console_keys and not replace:
        raise EnrollmentError(
            f"{data_dir} is enrolled with another console (key "
            f"{trust.console_keys[-1].hex()[:16]}...): enroll with --replace to change "
            "what this device trusts"
        )
    if trust is None or bundle.console_key not in trust.console_keys:
        TrustState((bundle.console_key,)).save(data_dir / TRUST_FILE)
    document = {
        "format": BUNDLE_FORMAT,
        "enrollment_token": bundle.enrollment_token.hex(),
        "server": bundle.server,
        "server_port": bundle.server_port,
        "ports": list(bundle.ports) if bundle.ports else None,
        "console_cert_sha256": bundle.console_cert_sha256,
    }
    write_private(data_dir / ENROLLMENT_FILE, json.dumps(document, indent=1).encode())
    return bundle


def load_enrollment(data_dir: Path) -> tuple[Enrollment, TrustState]:
    """The device's enrollment and trust state (``EnrollmentError`` if not enrolled)."""
    try:
        trust = TrustState.load(data_dir / TRUST_FILE)
    except TrustStateError as error:
        raise EnrollmentError(str(error)) from None
    path = data_dir / ENROLLMENT_FILE
    try:
        document = json.loads(path.read_text())
        token = bytes.fromhex(document["enrollment_token"])
        server, port = str(document["server"]), int(document["server_port"])
        saved = document.get("ports")
        ports = (int(saved[0]), int(saved[1]), int(saved[2])) if saved else None
        fingerprint = document.get("console_cert_sha256")
    except FileNotFoundError:
        raise EnrollmentError(
            f"{path}: this device is not enrolled (run `shoal client enroll BUNDLE`)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EnrollmentError(f"{path}: unreadable enrollment ({type(error).__name__})") from None
    enrollment = Enrollment(trust.console_keys[-1], token, server, port, ports, fingerprint)
    return enrollment, trust
