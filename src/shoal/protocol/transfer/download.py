"""The receiver's record of one chunk it asked for (see ``receiver``)."""

from __future__ import annotations

from shoal.core.ids import ContentId
from shoal.protocol.transfer.events import Address
from shoal.protocol.transfer.states import ReceiveState
from shoal.wire.messages import NO_TOKEN, Mode


class Download:
    """Receiver side of one request."""

    __slots__ = (
        "ack_deadline",
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
    ) -> None:
        self.request_id = request_id
        #: Creation order: timers due at the same wake-up fire in this order.
        self.order = order
        self.peer = peer
        self.content_id = content_id
        self.chunk_index = chunk_index
        self.chunk_length = chunk_length
        self.chunk_hash = chunk_hash
        self.mode = mode
        self.segment_size = segment_size
        self.segment_count = -(-chunk_length // segment_size)
        self.last_segment = self.segment_count - 1
        self.last_length = chunk_length - self.last_segment * segment_size
        self.state = ReceiveState.REQUESTED
        self.buffer: bytearray | None = None
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
