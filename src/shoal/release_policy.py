"""Which client release the console may offer, given the P2P servers it has.

Theory of operation
-------------------
A client release is a version of the ``shoal`` application that the console marks as the
one every client should run (``shoal.console.services.client_release``). Servers are
upgraded first: a release is offered only when every registered P2P server

1. accepts a client of that version (``shoal.versions.check_compatible``, the same
   table the server applies to each check-in), and
2. is at least as new in MAJOR.MINOR (``SERVERS_FIRST``): a client minor release may
   use what its server's minor brought, so a server must never be behind the clients
   it serves. Patch releases of the client may go ahead of the servers' patch level.

``check_release`` raises ``ReleaseRefused`` naming each server to upgrade and the version
to reach; the console answers it with 409 and the same message.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.core.errors import ShoalError
from shoal.versions import IncompatibleVersion, Role, check_compatible, parse_version

CLIENT_APPLICATION = "shoal"
"""The application whose versions are client releases (the wheel of the ``shoal``
distribution)."""

SERVERS_FIRST = True
"""Rule 2 above: a release's MAJOR.MINOR may not exceed any server's."""


class ReleaseRefused(ShoalError):
    """The release cannot be offered yet; the message says what to upgrade first."""

    def __init__(self, message: str, servers: list[str], minimum: str) -> None:
        super().__init__(message)
        self.servers = servers
        self.minimum = minimum


def server_minimum(release: str) -> str:
    """The oldest P2P server version that may serve clients of ``release``."""
    major, minor, _patch = parse_version(release)
    return f"{major}.{minor}.0" if SERVERS_FIRST else "0.0.0"


def server_blocks(release: str, server_version: str) -> str | None:
    """Why a server of ``server_version`` blocks ``release`` (None: it does not)."""
    try:
        check_compatible(Role.SERVER, Role.CLIENT, release, server_version)
    except IncompatibleVersion as error:
        return str(error)
    if SERVERS_FIRST and parse_version(server_version)[:2] < parse_version(release)[:2]:
        return (
            f"P2P server {server_version} is older than client release {release}: "
            f"servers are upgraded first"
        )
    return None


def check_release(release: str, servers: Iterable[tuple[str, str]]) -> None:
    """Raise ``ReleaseRefused`` unless every server ``(name, version)`` may serve
    clients of ``release`` (``InvalidVersion`` if ``release`` is not a version)."""
    parse_version(release)
    blocking = sorted(
        (name, version) for name, version in servers if server_blocks(release, version)
    )
    if not blocking:
        return
    minimum = server_minimum(release)
    names = ", ".join(f"{name} ({version})" for name, version in blocking)
    raise ReleaseRefused(
        f"client release {release} is newer than {len(blocking)} P2P server(s) support: "
        f"upgrade {names} to {minimum} or later first",
        [name for name, _ in blocking],
        minimum,
    )


def release_spec(version: str) -> dict[str, object]:
    """The install specification the console gives a client release without one: the
    client's own ``install-release`` command (``shoal.client.self_upgrade``)."""
    return {
        "command": f"shoal client install-release {{file}} --version {version}",
        "extension": ".whl",
        "detect": f"shoal client install-release --installed {version}",
        "timeout_seconds": 600,
    }
