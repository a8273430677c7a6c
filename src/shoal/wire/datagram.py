"""What every shoal datagram shares: the prefix, the version reply, tokens, field codecs.

Every datagram starts with magic ``b"SH"``, the protocol version and the message type
(``MessageType``), in every version, forever; the layout of each type is the table in
``shoal.wire.messages``. ``VERSION_ERROR``'s body is frozen too, so a peer of any
version can read why it was refused. A token (8 bytes, all zero for none) is the
address-validation proof of RFC 9000 §8.1, carried by transfer and discovery messages.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import TypeVar

from shoal.core.ids import DIGEST_SIZE, ContentId
from shoal.wire.buffer import Buffer
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic

MAGIC = b"SH"
#: The version every datagram is sent in, but a resumed chunk's request.
PROTOCOL_VERSION = 2
#: The data plane's range (transfer and discovery): version 3 is version 2 with an
#: offset in CHUNK_REQUEST (``RESUME_VERSION``), every other layout unchanged.
MIN_PROTOCOL_VERSION = 2
MAX_PROTOCOL_VERSION = 3
#: The first version whose CHUNK_REQUEST carries an offset (a resumed chunk's remainder);
#: a request for a whole chunk is sent as ``PROTOCOL_VERSION``, so any peer reads it.
RESUME_VERSION = 3
#: The control channel's own range (``shoal.wire.control``): it has no version 3.
MIN_CONTROL_VERSION = 2
MAX_CONTROL_VERSION = 2

#: Largest UDP payload there is (IPv4); anything longer is not a datagram we could send.
MAX_DATAGRAM_SIZE = 65507
#: Size of an address-validation token (RFC 9000 §8.1); all zero means "no token".
TOKEN_SIZE = 8
NO_TOKEN = bytes(TOKEN_SIZE)
#: Anti-amplification factor (RFC 9000 §8.1): bytes sent to an unvalidated address per
#: byte received from it.
AMPLIFICATION_FACTOR = 3


class MessageType(enum.IntEnum):
    """Message type codes (byte 3 of every datagram)."""

    CHUNK_REQUEST = 0x01
    DATA = 0x02
    ACK = 0x03
    REFUSAL = 0x04
    CANCEL = 0x05
    VERSION_ERROR = 0x06
    RETRY = 0x07
    WHO_HAS = 0x10
    HAVE = 0x11


_MESSAGE_TYPES = {member.value: member for member in MessageType}
"""Code -> type: a dict lookup is a fraction of an enum call, on every datagram."""

_E = TypeVar("_E", bound=enum.IntEnum)

PREFIX = struct.Struct(">2sBB")
PREFIX_SIZE = PREFIX.size


@dataclass(frozen=True, slots=True)
class VersionError:
    min_version: int
    max_version: int


# -- field helpers ---------------------------------------------------------------------


def pull_content_id(buf: Buffer) -> ContentId:
    """A 32-byte content ID."""
    return ContentId(buf.pull_bytes(DIGEST_SIZE))


def pull_enum(buf: Buffer, kind: type[_E]) -> _E:
    """A u8 code of ``kind``; an unknown code is a ``MalformedDatagram``."""
    code = buf.pull_uint8()
    try:
        return kind(code)
    except ValueError:
        raise MalformedDatagram(f"unknown {kind.__name__} code {code}") from None


def pull_token(buf: Buffer) -> bytes:
    """An 8-byte address-validation token."""
    return buf.pull_bytes(TOKEN_SIZE)


def push_token(buf: Buffer, token: bytes) -> None:
    if len(token) != TOKEN_SIZE:
        raise ValueError(f"a token is {TOKEN_SIZE} bytes, not {len(token)}")
    buf.push_bytes(token)


# -- the prefix and the one reply every version reads ----------------------------------


def push_prefix(buf: Buffer, message_type: MessageType, version: int = PROTOCOL_VERSION) -> None:
    buf.push_bytes(MAGIC)
    buf.push_uint8(version)
    buf.push_uint8(message_type)


def pull_prefix(buf: Buffer) -> tuple[int, MessageType]:
    """Read magic, version and type; return ``(version, type)``.

    Raises ``WrongMagic`` for foreign bytes, ``UnsupportedProtocolVersion`` for a
    version outside this build's range (except for VERSION_ERROR, readable in every
    version) and ``MalformedDatagram`` for an unknown type.
    """
    if buf.remaining >= PREFIX_SIZE:  # every datagram we read: one field pull, not three
        magic, version, code = buf.pull_struct(PREFIX)
        if magic != MAGIC:
            raise WrongMagic("not a shoal datagram (wrong magic)")
    else:  # too short: which error comes first is the same as field by field
        if buf.pull_bytes(2) != MAGIC:
            raise WrongMagic("not a shoal datagram (wrong magic)")
        version = buf.pull_uint8()
        code = buf.pull_uint8()
    if code == MessageType.VERSION_ERROR:
        return version, MessageType.VERSION_ERROR
    if not MIN_PROTOCOL_VERSION <= version <= MAX_PROTOCOL_VERSION:
        raise UnsupportedProtocolVersion(version)
    message_type = _MESSAGE_TYPES.get(code)
    if message_type is None:
        raise MalformedDatagram(f"unknown message type 0x{code:02x}")
    return version, message_type


def pull_version_error(buf: Buffer) -> VersionError:
    min_version = buf.pull_uint8()
    max_version = buf.pull_uint8()
    if min_version > max_version:
        raise MalformedDatagram(f"version range {min_version}..{max_version} is empty")
    return VersionError(min_version, max_version)


def push_version_error(buf: Buffer, message: VersionError) -> None:
    buf.push_uint8(message.min_version)
    buf.push_uint8(message.max_version)
