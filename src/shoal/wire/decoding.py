"""Decode a received datagram and count why it was dropped: one step for every role.

The transfer engine, discovery and the P2P server's control port each read datagrams
from anyone, and drop the same three kinds of bytes the same way (RFC 9000 §5.2.2: an
endpoint that cannot read a packet discards it): foreign bytes (``wrong_magic``), a
version this build does not speak (``unsupported_version``: the caller answers with
``VERSION_ERROR_REPLY``, within its amplification budget), and anything else malformed
(``malformed``). ``decode_counted`` does the counting; the caller decides only about
the reply.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol, TypeVar

from shoal.wire.datagram import (
    MAX_CONTROL_VERSION,
    MAX_PROTOCOL_VERSION,
    MIN_CONTROL_VERSION,
    MIN_PROTOCOL_VERSION,
    VersionError,
)
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic
from shoal.wire.messages import encode_datagram

_Message = TypeVar("_Message")

#: What a peer of another protocol version gets (6 bytes: at most 1.5x the shortest
#: datagram that gets one, a 4-byte prefix; within RFC 9000 §8.1's 3x).
VERSION_ERROR_REPLY = encode_datagram(VersionError(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION))
#: The control channel's (the P2P server's control port): its own, narrower range.
CONTROL_VERSION_ERROR_REPLY = encode_datagram(
    VersionError(MIN_CONTROL_VERSION, MAX_CONTROL_VERSION)
)


class Undecodable(enum.Enum):
    """Why a datagram was dropped before it became a message."""

    WRONG_MAGIC = "wrong_magic"
    UNSUPPORTED_VERSION = "unsupported_version"
    MALFORMED = "malformed"


class DecodeCounters(Protocol):
    """The drop counters every receiving role keeps."""

    wrong_magic: int
    unsupported_version: int
    malformed: int


def decode_counted(
    decode: Callable[[bytes | memoryview], _Message],
    data: bytes | memoryview,
    counters: DecodeCounters,
) -> _Message | Undecodable:
    """``decode(data)``, or why it failed, counted in ``counters``."""
    try:
        return decode(data)
    except WrongMagic:
        counters.wrong_magic += 1
        return Undecodable.WRONG_MAGIC
    except UnsupportedProtocolVersion:
        counters.unsupported_version += 1
        return Undecodable.UNSUPPORTED_VERSION
    except MalformedDatagram:
        counters.malformed += 1
        return Undecodable.MALFORMED
