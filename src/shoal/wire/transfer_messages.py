"""Transfer datagrams (codes 0x01..0x07): a chunk request, its DATA and ACKs, and replies.

Layouts: the table in ``shoal.wire.messages``. DATA and ACK are the transfer's hot path,
so they are encoded whole (prefix included) by ``encode_data``/``encode_ack``, and a
DATA header is read without building a ``Data``: as words (``DATA_WORDS``, the prefix
compared as ``DATA_PREFIX_WORD``), inline in the transfer receiver's batch loop, or for
one datagram by ``pull_data_header``; the other messages have a ``pull_*``/``push_*``
pair after the prefix.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.core.ids import ContentId
from shoal.wire.buffer import Buffer
from shoal.wire.datagram import (
    MAGIC,
    NO_TOKEN,
    PROTOCOL_VERSION,
    RESUME_VERSION,
    MessageType,
    pull_content_id,
    pull_enum,
    pull_token,
    push_token,
)
from shoal.wire.errors import MalformedDatagram

#: Most ranges one ACK carries (8 bytes each); the lowest ranges matter most for repair.
MAX_ACK_RANGES = 64


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


# DATA and ACK are the transfer's hot path (one DATA per segment, one ACK per 16), so
# their layouts are written once as struct formats, and every encoder and decoder of
# them (``encode_data``, ``pull_data_header``, ``pull_data``, ``encode_ack``,
# ``pull_ack``) packs or reads those, in one call where it counts.
#: DATA after the prefix: request_id, packet_number, segment_index, timestamp_us.
_DATA_FIELDS = struct.Struct(">IIII")
#: The whole DATA header, prefix included.
DATA_HEADER = struct.Struct(">2sBB" + _DATA_FIELDS.format[1:])
DATA_HEADER_SIZE = DATA_HEADER.size
#: The DATA header read as words: the 4-byte prefix compares as one integer
#: (``DATA_PREFIX_WORD``). The transfer receiver's batch loop unpacks it inline.
DATA_WORDS = struct.Struct(">I" + _DATA_FIELDS.format[1:])
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
    #: Send from this byte of the chunk on (a resumed chunk's remainder: a whole number
    #: of segments, inside the chunk, else refused INVALID_REQUEST). Not zero only in
    #: ``RESUME_VERSION``; 0, the whole chunk, is sent as version 2, which every peer reads.
    offset: int = 0


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
class Retry:
    """Prove you receive at your address: ask again with ``token`` (RFC 9000 §8.1.2)."""

    request_id: int
    token: bytes


def pull_chunk_request(buf: Buffer, version: int = PROTOCOL_VERSION) -> ChunkRequest:
    """A CHUNK_REQUEST's body in ``version`` (``RESUME_VERSION`` on: with an offset)."""
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
        offset=buf.pull_uint32() if version >= RESUME_VERSION else 0,
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
    if message.offset:  # RESUME_VERSION's field (``encode_datagram`` picks the version)
        buf.push_uint32(message.offset)


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


DATA_PREFIX_WORD = int.from_bytes(MAGIC + bytes([PROTOCOL_VERSION, MessageType.DATA]), "big")


def pull_data_header(datagram: bytes | bytearray | memoryview) -> tuple[int, int, int, int] | None:
    """``(request_id, packet_number, segment_index, timestamp_us)`` of a DATA datagram of
    this version with a payload (which follows at ``DATA_HEADER_SIZE``); None for any
    other datagram, which ``decode_datagram`` then reads (and names what is wrong with).

    The transfer engine's receive path: one unpack, no ``Data`` object, no copy.
    """
    if len(datagram) <= DATA_HEADER_SIZE:
        return None
    prefix, request_id, packet_number, segment_index, timestamp_us = DATA_WORDS.unpack_from(
        datagram
    )
    if prefix != DATA_PREFIX_WORD:
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


def pull_retry(buf: Buffer) -> Retry:
    return Retry(buf.pull_uint32(), pull_token(buf))


def push_retry(buf: Buffer, message: Retry) -> None:
    buf.push_uint32(message.request_id)
    push_token(buf, message.token)
