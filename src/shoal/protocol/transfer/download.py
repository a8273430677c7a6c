"""The receiver's record of one chunk it asked for (see ``receiver``).

A resumed chunk (issues 9 and 10) is asked with a *prefix*, its first bytes kept from an
earlier request that ended (its sender went away): only whole segments of it are used,
the request carries their length as its offset, and the transfer's segments, ACKs and
counts are those of the remainder. The buffer is the whole chunk's: the prefix copied
in, the remainder written through a view past it, and the whole hashed once complete.
"""

from __future__ import annotations

from shoal.core.ids import ContentId
from shoal.protocol.transfer.events import Address
from shoal.protocol.transfer.states import ReceiveState
from shoal.wire.messages import NO_TOKEN, Mode


class Download:
    """Receiver side of one request."""

    __slots__ = (
        "ack_deadline",
        "base",
        "buffer",
        "chunk_hash",
        "chunk_index",
        "chunk_length",
        "content_id",
        "cumulative",
        "highest_segment",
        "largest_packet_number",
        "largest_time",
        "largest_timestamp_us",
        "last_heard",
        "last_length",
        "last_segment",
        "least_delay_us",
        "mode",
        "order",
        "peer",
        "prefix",
        "received",
        "received_count",
        "request_datagram",
        "request_id",
        "requested_at",
        "requests_sent",
        "retry_at",
        "retry_interval",
        "segment_count",
        "segment_size",
        "state",
        "token_sent",
        "unacked",
        "whole",
        "whole_length",
    )

    def __init__(
        self,
        request_id: int,
        peer: Address,
        content_id: ContentId,
        chunk_index: int,
        chunk_length: int,
        chunk_hash: bytes,
        mode: Mode,
        segment_size: int,
        now: float,
        order: int,
        prefix: bytes = b"",
    ) -> None:
        self.request_id = request_id
        #: Creation order: timers due at the same wake-up fire in this order.
        self.order = order
        self.peer = peer
        self.content_id = content_id
        self.chunk_index = chunk_index
        #: The whole chunk's length; ``chunk_length`` (and every segment count) is what
        #: is asked of the peer: the bytes from ``base`` on (a torn tail of the prefix
        #: is dropped: the offset must be a whole number of segments).
        self.whole_length = chunk_length
        self.base = len(prefix) - len(prefix) % segment_size
        self.prefix = prefix[: self.base] if self.base != len(prefix) else prefix
        chunk_length -= self.base
        self.chunk_length = chunk_length
        self.chunk_hash = chunk_hash
        self.mode = mode
        self.segment_size = segment_size
        self.segment_count = -(-chunk_length // segment_size)
        self.last_segment = self.segment_count - 1
        self.last_length = chunk_length - self.last_segment * segment_size
        self.state = ReceiveState.REQUESTED
        #: Where DATA is written: the whole chunk's buffer, or a view of it past the
        #: prefix (``start_buffer``); ``whole`` is the chunk's buffer.
        self.buffer: bytearray | memoryview | None = None
        self.whole: bytearray | None = None
        self.received = bytearray(self.segment_count)
        self.received_count = 0
        self.cumulative = 0
        self.highest_segment = -1
        self.largest_packet_number = -1
        self.largest_time = now
        self.largest_timestamp_us = 0
        # Least one-way delay (receive clock minus the sender's stamp, modulo 2**32) of
        # the packets since the last ACK; -1: none yet.
        self.least_delay_us = -1
        self.unacked = 0
        self.ack_deadline: float | None = None
        self.last_heard = now
        self.retry_at = now
        self.retry_interval = 0.0
        self.requested_at = now
        self.requests_sent = 0
        self.request_datagram = b""
        self.token_sent = NO_TOKEN

    def start_buffer(self) -> bytearray | memoryview:
        """The first DATA came: the chunk's buffer, the prefix in it; where DATA goes."""
        whole = self.whole = bytearray(self.whole_length)
        if not self.base:
            self.buffer = whole
            return whole
        whole[: self.base] = self.prefix
        self.prefix = b""
        self.buffer = view = memoryview(whole)[self.base :]
        return view

    def received_prefix(self) -> memoryview | None:
        """A read-only view of the chunk's contiguous whole-segment prefix received so
        far (the prefix it was asked with included); None before any DATA and once the
        chunk is whole. Nothing is copied: the bytes in it are never written again."""
        whole = self.whole
        if whole is None or self.cumulative == self.segment_count:
            return None
        return memoryview(whole)[: self.base + self.cumulative * self.segment_size].toreadonly()

    def held_prefix(self) -> bytes:
        """The chunk's contiguous whole-segment prefix held now: the prefix it was asked
        with until data came, then that and the segments received in order after it."""
        whole = self.whole
        if whole is None:
            return self.prefix
        if self.cumulative == self.segment_count:  # complete: verified or bad, never resumed
            return b""
        return bytes(memoryview(whole)[: self.base + self.cumulative * self.segment_size])
