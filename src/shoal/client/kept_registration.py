"""The last registration answer, kept on disk: a restarted client whose P2P server does
not answer works offline from it.

A client registers at every start (``shoal.client.registration``): the answer names its
office, the office's type (broadcast or peer lists), the ports and the bandwidth policy.
A client restarted while its server cannot be reached (down for maintenance, the
office's WAN cut after a power failure) used to wait for that answer, and meanwhile
neither downloaded nor served anything, though its office's peers held what it lacked
and lacked what it held. So the shell keeps the last answer in ``registration.json``
with the address it was given for; when the first ``REGISTER`` of a new process goes
unanswered, the client takes the kept answer (if its address is still the same, and
only for a Default office, whose peers find each other by broadcast: a WiFi office's
come from the server's lists) and the assignment document it kept
(``shoal.client.kept_assignments``), checked as a fetched one is, and goes on with its
office's peers; it keeps registering, and the server's answer replaces the kept one.
The answer was authenticated when it came; what it holds is the client's own standing,
which nothing on the network can change here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from shoal.core.files import write_private
from shoal.wire.control import LicenceState, OfficeType, Registered

__all__ = ["KEPT_REGISTRATION_FILE", "load_registration", "save_registration"]

log = logging.getLogger("shoal.client")

KEPT_REGISTRATION_FILE = "registration.json"


def save_registration(path: Path, registered: Registered, ip: str) -> None:
    """Replace the kept answer (blocking: the shell runs it in a worker thread)."""
    body: dict[str, Any] = {
        "ip": ip,
        "version": registered.version,
        "office": registered.office,
        "office_type": registered.office_type.name,
        "checkin_seconds": registered.checkin_seconds,
        "ports": [registered.discovery_port, registered.data_port, registered.background_port],
        "licence_state": registered.licence_state.name,
        "seats_over": registered.seats_over,
        "alternative_ports": list(registered.alternative_ports),
        "foreground_kbps": registered.foreground_kbps,
        "background_kbps": registered.background_kbps,
        "max_downloads": registered.max_downloads,
    }
    write_private(path, json.dumps(body).encode())


def load_registration(path: Path, ip: str) -> Registered | None:
    """The kept answer if it was given for ``ip``; None when there is none, it is
    unreadable, or the device's address changed (another office, maybe)."""
    try:
        body = json.loads(path.read_text())
        if body["ip"] != ip:
            return None
        discovery, data, background = (int(port) for port in body["ports"])
        alternative = tuple(int(port) for port in body["alternative_ports"])
        if len(alternative) != 4:
            raise ValueError("alternative_ports needs 4 ports")
        return Registered(
            str(body["version"]),
            str(body["office"]),
            OfficeType[body["office_type"]],
            int(body["checkin_seconds"]),
            discovery,
            data,
            background,
            LicenceState[body["licence_state"]],
            int(body["seats_over"]),
            alternative,
            int(body["foreground_kbps"]),
            int(body["background_kbps"]),
            int(body["max_downloads"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s is unreadable (%s): waiting for the P2P server's answer", path, error)
        return None
