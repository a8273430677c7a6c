"""``shoal doctor server``: the checks of a P2P server.

Its UDP ports free (or held by this server running), its database and origin store,
the console reachable over HTTPS, its authentication key accepted, versions compatible,
activation, and the clock against the console's.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from shoal import __version__
from shoal.doctor.probes import bind_error, in_use
from shoal.health import CheckResult, check_database, check_directory
from shoal.server.console_link import (
    ConsoleKeyMismatch,
    ConsoleLink,
    ConsoleLinkError,
    ConsoleRefusedVersion,
    ConsoleUnreachable,
)
from shoal.sql import make_engine
from shoal.wire.control import ControlMessage, Hello, encode_control

MAX_CLOCK_SKEW = 30.0


def _shoal_server_answers(address: str, port: int) -> bool:
    """Whether a shoal P2P server answers a HELLO on ``port`` (it holds the port)."""
    hello = encode_control(ControlMessage(0, bytes(16), Hello()), None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.sendto(hello, ("127.0.0.1" if address == "0.0.0.0" else address, port))
            sock.recvfrom(65536)
        except OSError:
            return False
    return True


def _ports(bind: str, ports: dict[str, int]) -> list[CheckResult]:
    results = []
    for name, port in ports.items():
        check = f"{name} port {port}/udp"
        error = bind_error(bind, port)
        if error is None:
            results.append(CheckResult(check, True, "free and bindable"))
        elif in_use(error) and name == "control" and _shoal_server_answers(bind, port):
            results.append(CheckResult(check, True, "held by this P2P server (it answers)"))
        elif in_use(error) and name != "control" and results and "held by" in results[0].detail:
            results.append(CheckResult(check, True, "held by this P2P server"))
        else:
            results.append(
                CheckResult(
                    check,
                    False,
                    f"cannot bind {bind}:{port}: {error.strerror or error}"
                    + (" (another program holds it)" if in_use(error) else ""),
                    f"find it with `ss -ulpn 'sport = :{port}'` and stop it, or choose other "
                    "ports (--control-port... or the console's P2P settings)",
                )
            )
    return results


def _console(link: ConsoleLink) -> list[CheckResult]:
    try:
        link.settings()
    except ConsoleUnreachable as error:
        return [
            CheckResult(
                "console reachable",
                False,
                str(error),
                "start the console, check --console and that HTTPS to it is allowed; a TLS "
                "error: give its certificate with --console-ca",
            )
        ]
    except ConsoleKeyMismatch as error:
        return [
            CheckResult("console reachable", True, link.base_url),
            CheckResult(
                "key",
                False,
                str(error),
                "copy the P2P server authentication key from the console (Servers page or "
                "GET /api/v1/servers/auth-key) into --auth-key",
            ),
        ]
    except ConsoleRefusedVersion as error:
        return [
            CheckResult("console reachable", True, link.base_url),
            CheckResult("key", True, "accepted"),
            CheckResult("versions", False, str(error), "upgrade the older side"),
        ]
    except ConsoleLinkError as error:
        return [
            CheckResult("console reachable", True, link.base_url),
            CheckResult("key", True, "accepted"),
            CheckResult("versions", True, f"server {__version__} accepted"),
            CheckResult(
                "activation",
                False,
                str(error),
                "save the licence key in the console; run the server once so it registers",
            ),
        ]
    return [
        CheckResult("console reachable", True, link.base_url),
        CheckResult("key", True, "accepted"),
        CheckResult("versions", True, f"server {__version__} accepted"),
        CheckResult("activation", True, "activated by the console"),
    ]


def _clock(console_url: str, verify: Any) -> CheckResult:
    try:
        answer = httpx.get(
            console_url.rstrip("/") + "/api/v1/health/live", verify=verify, timeout=5
        )
        date = answer.headers.get("date")
    except httpx.HTTPError as error:
        return CheckResult(
            "clock", False, f"cannot read the console's clock: {error}", "see 'console reachable'"
        )
    if not date:
        return CheckResult("clock", True, "the console sends no Date header: not compared")
    skew = time.time() - email.utils.parsedate_to_datetime(date).timestamp()
    if abs(skew) > MAX_CLOCK_SKEW:
        return CheckResult(
            "clock",
            False,
            f"this server's clock is {skew:+.0f} s from the console's",
            "synchronise both clocks (NTP): signed documents and certificates expire",
        )
    return CheckResult("clock", True, f"{skew:+.1f} s from the console's (1 s resolution)")


def server_checks(
    *,
    data_dir: Path,
    console_url: str,
    auth_key: str,
    address: str,
    console_ca: Path | None = None,
    database_url: str | None = None,
    bind: str = "0.0.0.0",
    ports: dict[str, int],
) -> list[CheckResult]:
    """Every check of a P2P server started with these options."""
    results = _ports(bind, ports)
    server_id = "(never started)"
    url = database_url or f"sqlite:///{data_dir / 'server.sqlite3'}"
    if database_url is None and not (data_dir / "server.sqlite3").exists():
        results.append(
            CheckResult(
                "database",
                False,
                f"{data_dir / 'server.sqlite3'}: missing",
                "run the server once, or check --data-dir",
            )
        )
    else:
        engine = make_engine(url)
        results.append(check_database(engine))
        if results[-1].ok:
            with contextlib.suppress(SQLAlchemyError), engine.connect() as connection:
                server_id = (
                    connection.execute(
                        text("SELECT value FROM server_state WHERE key = 'server_id'")
                    ).scalar()
                    or server_id
                )
        engine.dispose()
    origin = data_dir / "origin"
    results.append(check_directory(origin if origin.is_dir() else data_dir, "origin store"))
    with ConsoleLink(
        console_url,
        auth_key,
        server_id,
        name="doctor",
        address=address,
        ca_certificate=console_ca,
        timeout=10,
    ) as link:
        results += _console(link)
    verify: Any = ssl.create_default_context(cafile=console_ca) if console_ca else True
    results.append(_clock(console_url, verify))
    return results
