"""Shared pieces of the control datagrams (``shoal.wire.control``): sizes and limits,
the enumerations their bodies carry, and the field codecs (strings, addresses, tokens)."""

from __future__ import annotations

import enum
import ipaddress
import struct

from shoal.core.address import Address
from shoal.wire.buffer import Buffer
from shoal.wire.errors import MalformedDatagram

DEVICE_ID_SIZE = 16
TAG_SIZE = 16
MAX_CHECKIN_ENTRIES = 16
MAX_PEERS = 128
MAX_MESSAGE_LENGTH = 1024
MAX_BANNED = 32
PUBLIC_KEY_SIZE = 32
MAX_CERTIFICATE = 512
MAX_OUTPUT_TAIL = MAX_MESSAGE_LENGTH
"""The bytes of an install command's output an INSTALL_REPORT carries (the client keeps
4 KiB; the datagram stays under the usual MTU)."""
MAX_INSTALL_ATTEMPTS = 16
HELLO_SIZE = 128
"""A client pads its HELLO to this size: the CERTIFICATE answer (at most 305 bytes, with
a server ID and a name of 64 bytes) stays under 3x the request: the server is no
reflector."""
ADDRESS_TOKEN_SIZE = 16
HEADER = struct.Struct(">2sBBI16sQ")
HEADER_SIZE = HEADER.size


class OfficeType(enum.IntEnum):
    """How a client's office shares content (the console's topology)."""

    DEFAULT = 0  # broadcast discovery on the subnet
    WIFI = 1  # unicast peer lists from the server
    VPN = 2  # never shares: server only
    NONE = 3  # in no known office: server only, if policy allows


class LicenceState(enum.IntEnum):
    OK = 0
    OVERAGE = 1  # more seats used than bought: allowed, and said everywhere


class LeaseDecision(enum.IntEnum):
    GRANTED = 0  # fetch from the server: you are the office's rendezvous point
    REDIRECTED = 1  # fetch from the holder (and other peers) instead
    DIRECT = 2  # your office does not share: fetch from the server


class InstallStatus(enum.IntEnum):
    """Where one install stands on a device (``shoal.client.install``); pending and
    downloading are not reported this way: the check-in's progress says them."""

    INSTALLING = 1  # detection, an attempt, or the wait before the next attempt
    INSTALLED = 2
    FAILED = 3
    REBOOT_REQUIRED = 4
    UNINSTALLING = 5
    UNINSTALLED = 6
    UNINSTALL_FAILED = 7


class RefusalCause(enum.IntEnum):
    AUTHENTICATION_FAILED = 1  # unauthenticated: wrong token, or an outdated certificate
    UNKNOWN_DEVICE = 2
    NOT_LICENSED = 3
    LICENCE_EXPIRED = 4
    VERSION_UNSUPPORTED = 5
    NOT_ACTIVATED = 6
    UNKNOWN_CONTENT = 7
    NOT_ASSIGNED = 8
    INVALID_REQUEST = 9
    REPLAYED = 10  # the counter is not above the last one accepted from this device
    NO_CERTIFICATE = 11  # the server has no certificate from its console yet
    ADDRESS_UNPROVEN = 13  # REGISTER without a recent address token: ask HELLO again
    RATE_LIMITED = 12  # too many new devices from one address (or in all)


def pull_str(buf: Buffer, wide: bool = False) -> str:
    length = buf.pull_uint16() if wide else buf.pull_uint8()
    if length > MAX_MESSAGE_LENGTH:
        raise MalformedDatagram(f"string of {length} bytes is too long")
    try:
        return buf.pull_bytes(length).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedDatagram("string is not UTF-8") from None


def push_str(buf: Buffer, text: str, wide: bool = False) -> None:
    encoded = text.encode("utf-8")[: MAX_MESSAGE_LENGTH if wide else 255]
    if wide:
        buf.push_uint16(len(encoded))
    else:
        buf.push_uint8(len(encoded))
    buf.push_bytes(encoded)


def pull_address(buf: Buffer) -> Address:
    ip = str(ipaddress.IPv4Address(buf.pull_bytes(4)))
    return ip, buf.pull_uint16()


def push_address(buf: Buffer, address: Address) -> None:
    try:
        buf.push_bytes(ipaddress.IPv4Address(address[0]).packed)
    except ValueError:
        raise MalformedDatagram(f"not an IPv4 address: {address[0]!r}") from None
    buf.push_uint16(address[1])


def push_token(buf: Buffer, token: bytes) -> None:
    if len(token) != ADDRESS_TOKEN_SIZE:
        raise ValueError(f"an address token has {ADDRESS_TOKEN_SIZE} bytes")
    buf.push_bytes(token)
