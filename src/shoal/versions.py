"""Which versions of console, P2P server and client work together: the policy as data.

Theory of operation
-------------------
Every control exchange carries the sender's role and version. The receiver looks up
``COMPATIBILITY[(receiver_role, sender_role)]``: the oldest sender version it still
accepts and the newest major it understands. ``check_compatible`` turns a refusal into
an ``IncompatibleVersion`` error whose message says which side to upgrade, and to what;
console, server and client use the same table, so both ends of a link agree on why.

Versions are ``MAJOR.MINOR.PATCH``. Within one major, a newer peer must keep talking to
an older one that is at least the minimum below; across majors nothing is promised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from shoal import __version__
from shoal.core.errors import ShoalError


class Role(StrEnum):
    """The three programs that talk to each other."""

    CONSOLE = "console"
    SERVER = "server"
    CLIENT = "client"


ROLE_NAMES: dict[Role, str] = {
    Role.CONSOLE: "console",
    Role.SERVER: "P2P server",
    Role.CLIENT: "client",
}


class InvalidVersion(ShoalError, ValueError):
    """A version string that is not MAJOR.MINOR.PATCH."""


class IncompatibleVersion(ShoalError):
    """A peer whose version this build refuses; the message says what to upgrade."""

    def __init__(self, message: str, upgrade: Role, minimum: str) -> None:
        super().__init__(message)
        self.upgrade = upgrade
        self.minimum = minimum


_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+.][0-9A-Za-z.-]+)?$")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; a pre-release or build suffix is ignored."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise InvalidVersion(f"not a version: {text!r} (expected MAJOR.MINOR.PATCH, e.g. 0.1.0)")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """What a receiver accepts from one kind of sender."""

    minimum: str
    """Oldest sender version accepted (same major as the receiver)."""


# (receiver, sender) -> policy. Raise a minimum when a release drops support for an
# older peer; add a row when a new pair of roles starts talking.
COMPATIBILITY: dict[tuple[Role, Role], PeerPolicy] = {
    (Role.CONSOLE, Role.SERVER): PeerPolicy(minimum="0.1.0"),
    (Role.SERVER, Role.CONSOLE): PeerPolicy(minimum="0.1.0"),
    (Role.SERVER, Role.CLIENT): PeerPolicy(minimum="0.1.0"),
    (Role.CLIENT, Role.SERVER): PeerPolicy(minimum="0.1.0"),
    (Role.CLIENT, Role.CLIENT): PeerPolicy(minimum="0.1.0"),
}


def check_compatible(
    receiver: Role,
    sender: Role,
    sender_version: str,
    receiver_version: str = __version__,
) -> None:
    """Raise ``IncompatibleVersion`` unless ``receiver`` accepts this sender version.

    The message names the program to upgrade and the version to reach, e.g. "P2P server
    0.0.9 is too old for console 0.1.0: upgrade the P2P server to 0.1.0 or later".
    """
    policy = COMPATIBILITY.get((receiver, sender))
    sender_name, receiver_name = ROLE_NAMES[sender], ROLE_NAMES[receiver]
    if policy is None:
        raise IncompatibleVersion(
            f"a {receiver_name} does not talk to a {sender_name}", sender, receiver_version
        )
    theirs = parse_version(sender_version)
    ours = parse_version(receiver_version)
    if theirs[0] > ours[0]:
        raise IncompatibleVersion(
            f"{sender_name} {sender_version} is newer than {receiver_name} "
            f"{receiver_version} supports: upgrade the {receiver_name} to {theirs[0]}.x",
            receiver,
            f"{theirs[0]}.0.0",
        )
    if theirs[0] < ours[0] or theirs < parse_version(policy.minimum):
        minimum = policy.minimum if theirs[0] == ours[0] else f"{ours[0]}.0.0"
        minimum = max(minimum, policy.minimum, key=parse_version)
        raise IncompatibleVersion(
            f"{sender_name} {sender_version} is too old for {receiver_name} "
            f"{receiver_version}: upgrade the {sender_name} to {minimum} or later",
            sender,
            minimum,
        )
