"""What the agent learns from its host and keeps in its data directory besides the
cache: its device key, its address and subnet, and the ports the console set."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

from shoal.core import portable
from shoal.core.errors import KeyFileError, ShoalError
from shoal.core.identity import DeviceKey
from shoal.ports import PortSet

DEVICE_KEY_FILE = "device.key"
NETWORK_FILE = "network.json"  # the ports the console set, as the server last said


class ClientSetupError(ShoalError):
    """The agent cannot start: not enrolled, no address toward the server, bad identity."""


def load_identity(data_dir: Path) -> DeviceKey:
    """The device key, created (and fsynced, mode 0600) at first start."""
    try:
        return DeviceKey.load_or_create(data_dir / DEVICE_KEY_FILE)
    except KeyFileError as error:
        raise ClientSetupError(str(error)) from None


def local_address_toward(server: str, port: int) -> str:
    """The source address this host uses to reach the server (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((server, port))
        return str(probe.getsockname()[0])
    except OSError as error:
        raise ClientSetupError(f"no route to the P2P server {server}: {error}") from None
    finally:
        probe.close()


def prefix_of(ip: str) -> int | None:
    """The subnet prefix length of a local IPv4 address, if an interface holds it
    (psutil: the same on Linux, Windows and macOS)."""
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and address.address == ip and address.netmask:
                return ipaddress.IPv4Network(f"0.0.0.0/{address.netmask}").prefixlen
    return None


def listening_ports(discovery: int, data: int, background: int) -> PortSet:
    """The ports a client listens on: discovery, foreground data, background data (its
    ``control`` stays the default: a client sends to its server's, it never listens)."""
    return PortSet(discovery=discovery, data=data, background=background)


def load_network(data_dir: Path) -> tuple[PortSet | None, PortSet | None]:
    """The console's main and alternative ports, as this client last learnt them."""
    try:
        document = json.loads((data_dir / NETWORK_FILE).read_text())
        main = listening_ports(*document["main"])
        alternative = (
            listening_ports(*document["alternative"]) if document.get("alternative") else None
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None, None
    return main, alternative


def save_network(data_dir: Path, main: PortSet, alternative: PortSet | None) -> None:
    path = data_dir / NETWORK_FILE
    document = {
        "main": [main.discovery, main.data, main.background],
        "alternative": (
            [alternative.discovery, alternative.data, alternative.background]
            if alternative
            else None
        ),
    }
    write_json(path, document)


def write_json(path: Path, document: Any, **options: Any) -> None:
    """Replace ``path`` with ``document`` as JSON atomically: a reader never sees half."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, **options))
    portable.replace(temporary, path)
