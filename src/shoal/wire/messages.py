"""Every shoal datagram: its layout, and ``pull_*``/``push_*`` codecs for each type.

Theory of operation
-------------------
Every datagram starts with the same four bytes, in every protocol version, forever::

    offset  size  field
    0       2     magic b"SH"
    2       1     protocol version (this build speaks MIN_PROTOCOL_VERSION..MAX_PROTOCOL_VERSION)
    3       1     message type (MessageType)

so a peer can always tell a shoal datagram from noise, and always read a
``VERSION_ERROR`` reply (whose body layout is frozen too). The fields that follow
depend on the type; all integers are big-endian and unsigned.

===============  ====  =====================================================================
type             code  body
===============  ====  =====================================================================
CHUNK_REQUEST    0x01  request_id u32, token 8 B, content_id 32 B, chunk_index u32,
                       chunk_length u32, mode u8, segment_size u16, receive_window u32
DATA             0x02  request_id u32, packet_number u32, segment_index u32, timestamp_us u32,
                       payload (the rest: exactly segment_size bytes, shorter for the last)
ACK              0x03  request_id u32, largest_packet_number u32, ack_delay_us u32,
                       one_way_delay_us u32, cumulative u32, receive_window u32,
                       range_count u8, range_count x (start u32, end u32)
REFUSAL          0x04  request_id u32, reason u8
CANCEL           0x05  request_id u32
VERSION_ERROR    0x06  min_version u8, max_version u8
RETRY            0x07  request_id u32, token 8 B
WHO_HAS          0x10  query_id u32, content_id 32 B, token 8 B, padding (zero bytes, the rest)
HAVE             0x11  query_id u32, content_id 32 B, token 8 B, chunk_count u32,
                       bitmap (ChunkSet)
===============  ====  =====================================================================

Codes 0x10..0x1F belong to discovery; 0x20..0x2F are kept for rendezvous.

A chunk is cut into segments of ``segment_size`` bytes (the requester picks it, so it
fits its path MTU): segment ``i`` covers bytes ``i * segment_size`` onwards. Packet
numbers count transmissions of one transfer (a retransmission gets a new number), which
keeps RTT samples unambiguous (the QUIC design, RFC 9002 §2). ACK acknowledges
segments: all below ``cumulative``, plus ``[start, end)`` ranges above it in increasing
order, non-adjacent. ``timestamp_us`` is the sender's clock in microseconds modulo 2**32;
the receiver echoes ``now - timestamp_us`` as ``one_way_delay_us`` for LEDBAT
(RFC 6817 §3.3); the clocks need not agree, only their difference must hold still.

Address validation (RFC 9000 §8.1). Nothing is sent to an address that has not proven
it receives there beyond 3x the bytes received from it. A *token* (8 bytes, all zero
for none) is what a sender computed for the requester's address (a keyed hash, so the
sender keeps no state for it) and sent only to that address: a CHUNK_REQUEST carrying
the right token proves the requester receives there; one without gets a 16-byte RETRY
with the token (RFC 9000 §8.1.2) and the requester asks again with it, then keeps it
for every later request to that sender (RFC 9000 §8.1.3): one round trip per pair of
peers and token lifetime, no byte more per DATA packet. Discovery does the same: a HAVE
carries the answerer's token for the asker (zero once the asker is validated), a
WHO_HAS echoes it, and a WHO_HAS is padded with zero bytes so that the answer it asks
for is at most 3x its size (RFC 9000 §14.1 pads the client's Initial for the same
reason).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import DIGEST_SIZE, ContentId
from shoal.wire.buffer import Buffer
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic

MAGIC = b"SH"
PROTOCOL_VERSION = 2
MIN_PROTOCOL_VERSION = 2
MAX_PROTOCOL_VERSION = 2

#: Largest UDP payload there is (IPv4); anything longer is not a datagram we could send.
MAX_DATAGRAM_SIZE = 65507
#: Most ranges one ACK carries (8 bytes each); the lowest ranges matter most for repair.
MAX_ACK_RANGES = 64
#: Size of an address-validation token (RFC 9000 §8.1); all zero means "no token".
TOKEN_SIZE = 8
NO_TOKEN = bytes(TOKEN_SIZE)
#: Bytes of a HAVE datagram before its bitmap (prefix included).
HAVE_HEADER_SIZE = 4 + 4 + 32 + TOKEN_SIZE + 4
#: Bytes of a WHO_HAS datagram without padding (prefix included).
WHO_HAS_SIZE = 4 + 4 + 32 + TOKEN_SIZE
#: Most chunks one HAVE bitmap may describe: one bit per chunk, so that the whole HAVE
#: (52 bytes before the bitmap) fits a 1400-byte datagram. 10,784 chunks of 1 MiB is a
#: 10.5 GiB package; larger ones need a ranged HAVE (the discovery issue decides).
MAX_HAVE_CHUNKS = (1400 - HAVE_HEADER_SIZE) * 8
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


class Mode(enum.IntEnum):
    """Congestion control a transfer asks for."""

    #: Delay-aware, NewReno against loss-based flows (DelayReno): the user is waiting.
    FOREGROUND = 0
    #: LEDBAT (RFC 6817): use spare capacity, yield to other traffic.
    BACKGROUND = 1


class RefusalReason(enum.IntEnum):
    """Why a sender will not serve a chunk (REFUSAL reason byte)."""

    NOT_FOUND = 1
    BUSY = 2
    INVALID_REQUEST = 3
    SHUTTING_DOWN = 4
    #: Never on the wire: the peer answered with VERSION_ERROR.
    UNSUPPORTED_VERSION = 255


_E = TypeVar("_E", bound=enum.IntEnum)

PREFIX = struct.Struct(">2sBB")
PREFIX_SIZE = PREFIX.size
# DATA and ACK are the transfer's hot path (one DATA per segment, one ACK per 16), so
# their layouts are written once as struct formats, and every encoder and decoder of
# them (``encode_data``, ``pull_data_header``, ``pull_data``, ``encode_ack``,
# ``pull_ack``) packs or reads those, in one call where it counts.
#: DATA after the prefix: request_id, packet_number, segment_index, timestamp_us.
_DATA_FIELDS = struct.Struct(">IIII")
#: The whole DATA header, prefix included.
DATA_HEADER = struct.Struct(">2sBB" + _DATA_FIELDS.format[1:])
DATA_HEADER_SIZE = DATA_HEADER.size
#: The DATA header read as words: the 4-byte prefix compares as one integer.
_DATA_WORDS = struct.Struct(">I" + _DATA_FIELDS.format[1:])
#: ACK after the prefix, up to its ranges: request_id, largest_packet_number,
#: ack_delay_us, one_way_delay_us, cumulative, receive_window, range_count.
_ACK_FIELDS = struct.Struct(">IIIIIIB")
_ACK_HEADER = struct.Struct(">2sBB" + _ACK_FIELDS.format[1:])
_ACK_RANGE = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    request_id: int
    content_id: ContentId
    chunk_index: int
    chunk_length: int
    mode: Mode
    segment_size: int
    receive_window: int
    #: The sender's token for our address (from its RETRY), or NO_TOKEN.
    token: bytes = NO_TOKEN


@dataclass(frozen=True, slots=True)
class Data:
    request_id: int
    packet_number: int
    segment_index: int
    timestamp_us: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    request_id: int
    largest_packet_number: int
    ack_delay_us: int
    one_way_delay_us: int
    cumulative: int
    receive_window: int
    ranges: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    request_id: int
    reason: RefusalReason


@dataclass(frozen=True, slots=True)
class Cancel:
    request_id: int


@dataclass(frozen=True, slots=True)
class VersionError:
    min_version: int
    max_version: int


@dataclass(frozen=True, slots=True)
class Retry:
    """Prove you receive at your address: ask again with ``token`` (RFC 9000 §8.1.2)."""

    request_id: int
    token: bytes


@dataclass(frozen=True, slots=True)
class WhoHas:
    query_id: int
    content_id: ContentId
    #: The answerer's token for our address (echoed from its HAVE), or NO_TOKEN.
    token: bytes = NO_TOKEN
    #: Zero bytes after the fields, so that the answer is at most 3x the query.
    padding: int = 0


@dataclass(frozen=True, slots=True)
class Have:
    query_id: int
    content_id: ContentId
    chunks: ChunkSet
    #: The answerer's token for the asker's address; NO_TOKEN once it is validated.
    token: bytes = NO_TOKEN


Message = ChunkRequest | Data | Ack | Refusal | Cancel | VersionError | Retry | WhoHas | Have


def who_has_padding(chunk_count: int | None) -> int:
    """Padding for a WHO_HAS whose answer (a HAVE of ``chunk_count`` chunks; the largest
    there is when unknown) may be sent to an unvalidated asker: the query is at least
    half the answer, so the answer plus one query back stay within 3x (RFC 9000 §8.1)."""
    count = MAX_HAVE_CHUNKS if chunk_count is None else min(chunk_count, MAX_HAVE_CHUNKS)
    answer = HAVE_HEADER_SIZE + (count + 7) // 8
    return max(0, -(-answer // 2) - WHO_HAS_SIZE)


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


def push_prefix(buf: Buffer, message_type: MessageType, version: int = PROTOCOL_VERSION) -> None:
    buf.push_bytes(MAGIC)
    buf.push_uint8(version)
    buf.push_uint8(message_type)


# -- one pull/push pair per message type (the prefix is already read/written); DATA and
# -- ACK, the hot path, are encoded whole by ``encode_data``/``encode_ack`` ---------------


def pull_token(buf: Buffer) -> bytes:
    """An 8-byte address-validation token."""
    return buf.pull_bytes(TOKEN_SIZE)


def push_token(buf: Buffer, token: bytes) -> None:
    if len(token) != TOKEN_SIZE:
        raise ValueError(f"a token is {TOKEN_SIZE} bytes, not {len(token)}")
    buf.push_bytes(token)


def pull_chunk_request(buf: Buffer) -> ChunkRequest:
    request_id = buf.pull_uint32()
    token = pull_token(buf)
    request = ChunkRequest(
        request_id=request_id,
        content_id=pull_content_id(buf),
        chunk_index=buf.pull_uint32(),
        chunk_length=buf.pull_uint32(),
        mode=pull_enum(buf, Mode),
        segment_size=buf.pull_uint16(),
        receive_window=buf.pull_uint32(),
        token=token,
    )
    if request.chunk_length == 0 or request.segment_size == 0 or request.receive_window == 0:
        raise MalformedDatagram("chunk request with a zero length, segment size or window")
    return request


def push_chunk_request(buf: Buffer, message: ChunkRequest) -> None:
    buf.push_uint32(message.request_id)
    push_token(buf, message.token)
    buf.push_bytes(message.content_id.digest)
    buf.push_uint32(message.chunk_index)
    buf.push_uint32(message.chunk_length)
    buf.push_uint8(message.mode)
    buf.push_uint16(message.segment_size)
    buf.push_uint32(message.receive_window)


def encode_data(
    request_id: int,
    packet_number: int,
    segment_index: int,
    timestamp_us: int,
    payload: bytes | bytearray | memoryview,
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """A whole DATA datagram (prefix included): one pack and one copy of the payload.

    The one DATA encoder: the transfer engine calls it for every segment it sends, and
    ``encode_datagram`` for a ``Data`` message.
    """
    return (
        DATA_HEADER.pack(
            MAGIC,
            version,
            MessageType.DATA,
            request_id,
            packet_number,
            segment_index,
            timestamp_us,
        )
        + payload
    )


_DATA_PREFIX = int.from_bytes(MAGIC + bytes([PROTOCOL_VERSION, MessageType.DATA]), "big")


def pull_data_header(datagram: bytes | bytearray | memoryview) -> tuple[int, int, int, int] | None:
    """``(request_id, packet_number, segment_index, timestamp_us)`` of a DATA datagram of
    this version with a payload (which follows at ``DATA_HEADER_SIZE``); None for any
    other datagram, which ``decode_datagram`` then reads (and names what is wrong with).

    The transfer engine's receive path: one unpack, no ``Data`` object, no copy.
    """
    if len(datagram) <= DATA_HEADER_SIZE:
        return None
    prefix, request_id, packet_number, segment_index, timestamp_us = _DATA_WORDS.unpack_from(
        datagram
    )
    if prefix != _DATA_PREFIX:
        return None
    return request_id, packet_number, segment_index, timestamp_us


def pull_data(buf: Buffer) -> Data:
    request_id, packet_number, segment_index, timestamp_us = buf.pull_struct(_DATA_FIELDS)
    if buf.remaining == 0:
        raise MalformedDatagram("data datagram without payload")
    payload = bytes(buf.pull_rest())
    return Data(request_id, packet_number, segment_index, timestamp_us, payload)


def encode_ack(
    request_id: int,
    largest_packet_number: int,
    ack_delay_us: int,
    one_way_delay_us: int,
    cumulative: int,
    receive_window: int,
    range_bounds: Sequence[int] = (),
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """A whole ACK datagram (prefix included); ``range_bounds`` is the ranges flattened,
    ``start, end, start, end, ...`` (as the receiver finds them in its bitmap).

    The one ACK encoder: the transfer engine calls it for every ACK it sends, and
    ``encode_datagram`` for an ``Ack`` message.
    """
    head = _ACK_HEADER.pack(
        MAGIC,
        version,
        MessageType.ACK,
        request_id,
        largest_packet_number,
        ack_delay_us,
        one_way_delay_us,
        cumulative,
        receive_window,
        len(range_bounds) // 2,
    )
    if not range_bounds:
        return head
    return head + struct.pack(f">{len(range_bounds)}I", *range_bounds)


def pull_ack(buf: Buffer) -> Ack:
    (
        request_id,
        largest_packet_number,
        ack_delay_us,
        one_way_delay_us,
        cumulative,
        receive_window,
        range_count,
    ) = buf.pull_struct(_ACK_FIELDS)
    if range_count > MAX_ACK_RANGES:
        raise MalformedDatagram(f"ack with {range_count} ranges (at most {MAX_ACK_RANGES})")
    ranges = []
    floor = cumulative
    for _ in range(range_count):
        start, end = buf.pull_struct(_ACK_RANGE)
        # Ranges lie above the cumulative point, ascend, and never touch (they would merge).
        if not floor < start < end:
            raise MalformedDatagram(f"ack range [{start}, {end}) out of order")
        ranges.append((start, end))
        floor = end
    return Ack(
        request_id,
        largest_packet_number,
        ack_delay_us,
        one_way_delay_us,
        cumulative,
        receive_window,
        tuple(ranges),
    )


def pull_refusal(buf: Buffer) -> Refusal:
    request_id = buf.pull_uint32()
    reason = pull_enum(buf, RefusalReason)
    if reason is RefusalReason.UNSUPPORTED_VERSION:
        raise MalformedDatagram("refusal reason 255 is local only")
    return Refusal(request_id, reason)


def push_refusal(buf: Buffer, message: Refusal) -> None:
    buf.push_uint32(message.request_id)
    buf.push_uint8(message.reason)


def pull_cancel(buf: Buffer) -> Cancel:
    return Cancel(buf.pull_uint32())


def push_cancel(buf: Buffer, message: Cancel) -> None:
    buf.push_uint32(message.request_id)


def pull_version_error(buf: Buffer) -> VersionError:
    min_version = buf.pull_uint8()
    max_version = buf.pull_uint8()
    if min_version > max_version:
        raise MalformedDatagram(f"version range {min_version}..{max_version} is empty")
    return VersionError(min_version, max_version)


def push_version_error(buf: Buffer, message: VersionError) -> None:
    buf.push_uint8(message.min_version)
    buf.push_uint8(message.max_version)


def pull_retry(buf: Buffer) -> Retry:
    return Retry(buf.pull_uint32(), pull_token(buf))


def push_retry(buf: Buffer, message: Retry) -> None:
    buf.push_uint32(message.request_id)
    push_token(buf, message.token)


def pull_who_has(buf: Buffer) -> WhoHas:
    query_id = buf.pull_uint32()
    content_id = pull_content_id(buf)
    token = pull_token(buf)
    padding = buf.pull_rest()
    if any(padding):
        # One encoding per message: padding is zeros (as QUIC's PADDING frames).
        raise MalformedDatagram("who-has padding that is not zero")
    return WhoHas(query_id, content_id, token, len(padding))


def push_who_has(buf: Buffer, message: WhoHas) -> None:
    buf.push_uint32(message.query_id)
    buf.push_bytes(message.content_id.digest)
    push_token(buf, message.token)
    buf.push_bytes(bytes(message.padding))


def pull_have(buf: Buffer) -> Have:
    query_id = buf.pull_uint32()
    content_id = pull_content_id(buf)
    token = pull_token(buf)
    count = buf.pull_uint32()
    if count > MAX_HAVE_CHUNKS:
        raise MalformedDatagram(f"availability for {count} chunks (at most {MAX_HAVE_CHUNKS})")
    bitmap = buf.pull_bytes((count + 7) // 8)
    try:
        chunks = ChunkSet.from_bytes(count, bitmap)
    except ValueError as error:
        raise MalformedDatagram(f"bad availability bitmap: {error}") from None
    return Have(query_id, content_id, chunks, token)


def push_have(buf: Buffer, message: Have) -> None:
    buf.push_uint32(message.query_id)
    buf.push_bytes(message.content_id.digest)
    push_token(buf, message.token)
    buf.push_uint32(message.chunks.count)
    buf.push_bytes(message.chunks.to_bytes())


# -- whole datagrams ---------------------------------------------------------------------


def encode_datagram(message: Message, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode one message as a complete datagram (prefix included)."""
    buf = Buffer()
    if isinstance(message, ChunkRequest):
        push_prefix(buf, MessageType.CHUNK_REQUEST, version)
        push_chunk_request(buf, message)
    elif isinstance(message, Data):
        return encode_data(
            message.request_id,
            message.packet_number,
            message.segment_index,
            message.timestamp_us,
            message.payload,
            version,
        )
    elif isinstance(message, Ack):
        return encode_ack(
            message.request_id,
            message.largest_packet_number,
            message.ack_delay_us,
            message.one_way_delay_us,
            message.cumulative,
            message.receive_window,
            [bound for pair in message.ranges for bound in pair],
            version,
        )
    elif isinstance(message, Refusal):
        push_prefix(buf, MessageType.REFUSAL, version)
        push_refusal(buf, message)
    elif isinstance(message, Cancel):
        push_prefix(buf, MessageType.CANCEL, version)
        push_cancel(buf, message)
    elif isinstance(message, VersionError):
        push_prefix(buf, MessageType.VERSION_ERROR, version)
        push_version_error(buf, message)
    elif isinstance(message, Retry):
        push_prefix(buf, MessageType.RETRY, version)
        push_retry(buf, message)
    elif isinstance(message, WhoHas):
        push_prefix(buf, MessageType.WHO_HAS, version)
        push_who_has(buf, message)
    else:
        push_prefix(buf, MessageType.HAVE, version)
        push_have(buf, message)
    return buf.data()


def pull_prefix(buf: Buffer) -> tuple[int, MessageType]:
    """Read magic, version and type; return ``(version, type)``.

    Raises ``WrongMagic`` for foreign bytes, ``UnsupportedProtocolVersion`` for a
    version outside this build's range (except for VERSION_ERROR, readable in every
    version) and ``MalformedDatagram`` for an unknown type.
    """
    if buf.pull_bytes(2) != MAGIC:
        raise WrongMagic("not a shoal datagram (wrong magic)")
    version = buf.pull_uint8()
    code = buf.pull_uint8()
    if code == MessageType.VERSION_ERROR:
        return version, MessageType.VERSION_ERROR
    if not MIN_PROTOCOL_VERSION <= version <= MAX_PROTOCOL_VERSION:
        raise UnsupportedProtocolVersion(version)
    try:
        return version, MessageType(code)
    except ValueError:
        raise MalformedDatagram(f"unknown message type 0x{code:02x}") from None


_PULLERS: dict[MessageType, Callable[[Buffer], Message]] = {
    MessageType.CHUNK_REQUEST: pull_chunk_request,
    MessageType.DATA: pull_data,
    MessageType.ACK: pull_ack,
    MessageType.REFUSAL: pull_refusal,
    MessageType.CANCEL: pull_cancel,
    MessageType.VERSION_ERROR: pull_version_error,
    MessageType.RETRY: pull_retry,
    MessageType.WHO_HAS: pull_who_has,
    MessageType.HAVE: pull_have,
}


def decode_datagram(data: bytes | bytearray | memoryview) -> Message:
    """Decode one datagram; any malformed input raises ``MalformedDatagram`` (or a subclass)."""
    if len(data) > MAX_DATAGRAM_SIZE:
        raise MalformedDatagram(f"datagram of {len(data)} bytes is larger than UDP allows")
    buf = Buffer(data)
    _version, message_type = pull_prefix(buf)
    message: Message = _PULLERS[message_type](buf)
    if not buf.eof():
        raise MalformedDatagram(
            f"{message_type.name} datagram has {buf.remaining} unexpected trailing bytes"
        )
    return message
