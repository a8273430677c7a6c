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
                       chunk_length u32, mode u8, segment_size u16, receive_window u32,
                       [version 3: offset u32]
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

Version 3 (``RESUME_VERSION``) is version 2 with one field more: a CHUNK_REQUEST's
``offset``, where in the chunk the sender starts (a resumed chunk's remainder: a whole
number of segments, inside the chunk, else refused INVALID_REQUEST; segment ``i`` of
the transfer is then bytes ``offset + i * segment_size`` onwards of the chunk). Only a
request with a non-zero offset is sent as version 3, so a whole chunk's request stays
byte for byte what a version-2 peer reads; every other message is sent as version 2 and
read in either. The control channel (``shoal.wire.control``) keeps its own range, 2..2.

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

Where each part lives: the prefix, ``VERSION_ERROR``, tokens and the field codecs in
``shoal.wire.datagram``; the transfer messages (0x01..0x07) in
``shoal.wire.transfer_messages``; discovery (0x10..0x1F) in
``shoal.wire.discovery_messages``. This module is the whole datagram: the ``Message``
union, ``encode_datagram`` and ``decode_datagram``, and it re-exports every name of
the three, so ``from shoal.wire.messages import ...`` keeps working.
"""

from __future__ import annotations

from collections.abc import Callable

from shoal.wire.buffer import Buffer
from shoal.wire.datagram import (
    AMPLIFICATION_FACTOR,
    MAGIC,
    MAX_DATAGRAM_SIZE,
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    NO_TOKEN,
    PREFIX,
    PREFIX_SIZE,
    PROTOCOL_VERSION,
    RESUME_VERSION,
    TOKEN_SIZE,
    MessageType,
    VersionError,
    pull_content_id,
    pull_enum,
    pull_prefix,
    pull_token,
    pull_version_error,
    push_prefix,
    push_token,
    push_version_error,
)
from shoal.wire.discovery_messages import (
    HAVE_HEADER_SIZE,
    MAX_HAVE_CHUNKS,
    WHO_HAS_SIZE,
    Have,
    WhoHas,
    pull_have,
    pull_who_has,
    push_have,
    push_who_has,
    who_has_padding,
)
from shoal.wire.errors import MalformedDatagram
from shoal.wire.transfer_messages import (
    DATA_HEADER,
    DATA_HEADER_SIZE,
    DATA_PREFIX_WORD,
    DATA_WORDS,
    MAX_ACK_RANGES,
    Ack,
    Cancel,
    ChunkRequest,
    Data,
    Mode,
    Refusal,
    RefusalReason,
    Retry,
    encode_ack,
    encode_data,
    pull_ack,
    pull_cancel,
    pull_chunk_request,
    pull_data,
    pull_data_header,
    pull_refusal,
    pull_retry,
    push_cancel,
    push_chunk_request,
    push_refusal,
    push_retry,
)

__all__ = [
    "AMPLIFICATION_FACTOR",
    "DATA_HEADER",
    "DATA_HEADER_SIZE",
    "DATA_PREFIX_WORD",
    "DATA_WORDS",
    "HAVE_HEADER_SIZE",
    "MAGIC",
    "MAX_ACK_RANGES",
    "MAX_DATAGRAM_SIZE",
    "MAX_HAVE_CHUNKS",
    "MAX_PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "NO_TOKEN",
    "PREFIX",
    "PREFIX_SIZE",
    "PROTOCOL_VERSION",
    "RESUME_VERSION",
    "TOKEN_SIZE",
    "WHO_HAS_SIZE",
    "Ack",
    "Cancel",
    "ChunkRequest",
    "Data",
    "Have",
    "Message",
    "MessageType",
    "Mode",
    "Refusal",
    "RefusalReason",
    "Retry",
    "VersionError",
    "WhoHas",
    "decode_datagram",
    "encode_ack",
    "encode_data",
    "encode_datagram",
    "pull_ack",
    "pull_cancel",
    "pull_chunk_request",
    "pull_content_id",
    "pull_data",
    "pull_data_header",
    "pull_enum",
    "pull_have",
    "pull_prefix",
    "pull_refusal",
    "pull_retry",
    "pull_token",
    "pull_version_error",
    "pull_who_has",
    "push_cancel",
    "push_chunk_request",
    "push_have",
    "push_prefix",
    "push_refusal",
    "push_retry",
    "push_token",
    "push_version_error",
    "push_who_has",
    "who_has_padding",
]


Message = ChunkRequest | Data | Ack | Refusal | Cancel | VersionError | Retry | WhoHas | Have


def encode_datagram(message: Message, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode one message as a complete datagram (prefix included)."""
    buf = Buffer()
    if isinstance(message, ChunkRequest):
        # Only a resumed chunk's request needs version 3; a whole one is what all read.
        push_prefix(buf, MessageType.CHUNK_REQUEST, RESUME_VERSION if message.offset else version)
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
    version, message_type = pull_prefix(buf)
    message: Message = (
        pull_chunk_request(buf, version)
        if message_type is MessageType.CHUNK_REQUEST
        else _PULLERS[message_type](buf)
    )
    if not buf.eof():
        raise MalformedDatagram(
            f"{message_type.name} datagram has {buf.remaining} unexpected trailing bytes"
        )
    return message
