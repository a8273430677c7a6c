"""Events the transfer engine reports (``TransferEngine.next_event``), past tense."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shoal.core.address import Address as Address  # re-exported: the engine imports it here
from shoal.core.ids import ContentId
from shoal.wire.messages import Mode, RefusalReason


class Role(enum.Enum):
    """Which end of a transfer an event is about."""

    RECEIVER = "receiver"
    SENDER = "sender"


@dataclass(frozen=True, slots=True)
class ChunkRequested:
    """A peer asks for a chunk: answer with ``send_chunk`` or ``refuse_chunk``."""

    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int
    #: The whole chunk's length (what the store's chunk must be).
    chunk_length: int
    mode: Mode
    #: Send the chunk from this byte on (a resumed chunk's remainder: the engine checked
    #: it is a whole number of segments inside the chunk); ``send_chunk`` takes those bytes.
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ChunkStarted:
    """Receiver side: the first bytes of a requested chunk arrived (once per request):
    its sender is serving it now, no longer holding it in a line."""

    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int


@dataclass(frozen=True, slots=True)
class ChunkReceived:
    """A requested chunk arrived whole and matches its SHA-256.

    ``data`` is the buffer the chunk was received into, handed over uncopied: the
    engine keeps no reference to it, so it is the application's to write and drop.
    """

    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int
    data: bytes | bytearray


@dataclass(frozen=True, slots=True)
class ChunkCorrupted:
    """A requested chunk arrived whole but does not match its hash: ``peer`` sent bad
    data, unless the chunk was ``resumed`` (its prefix came from an earlier request, and
    which of the two was bad is not known: ask the whole chunk, blame nobody)."""

    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class ChunkRefused:
    """The peer will not send the chunk (or speaks no protocol version we do)."""

    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int
    reason: RefusalReason
    #: The chunk's contiguous whole-segment prefix held when it ended (what was received,
    #: or the prefix it was asked with): ``request_chunk`` may resume from it.
    prefix: bytes = b""


@dataclass(frozen=True, slots=True)
class ChunkDelivered:
    """Sender side: the peer acknowledged every byte of a chunk we sent."""

    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int


@dataclass(frozen=True, slots=True)
class RequestCancelled:
    """Sender side: the peer no longer wants a chunk it asked for."""

    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int


@dataclass(frozen=True, slots=True)
class TransferTimedOut:
    """The peer went silent (or stopped making progress) and the transfer was abandoned."""

    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int
    role: Role
    #: Receiver side: the chunk's contiguous whole-segment prefix held when it ended (as
    #: ``ChunkRefused.prefix``).
    prefix: bytes = b""


@dataclass(frozen=True, slots=True)
class PeerPortClosed:
    """Nothing listens at ``peer`` any more: the network answered a datagram to it with
    ICMP port unreachable (``TransferEngine.abandon_peer``), so its process died (or
    restarted since). Our uploads to it have ended (``RequestCancelled`` each)."""

    peer: Address


@dataclass(frozen=True, slots=True)
class VersionRejected:
    """The peer answered with a version error: it speaks only ``min..max``."""

    peer: Address
    min_version: int
    max_version: int


Event = (
    ChunkRequested
    | ChunkStarted
    | ChunkReceived
    | ChunkCorrupted
    | ChunkRefused
    | ChunkDelivered
    | RequestCancelled
    | TransferTimedOut
    | PeerPortClosed
    | VersionRejected
)
