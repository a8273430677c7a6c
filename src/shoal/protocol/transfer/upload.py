"""The sender's record of one chunk a peer asked for (see ``sender``)."""

from __future__ import annotations

from array import array
from collections import deque

from shoal.protocol.transfer.events import Address
from shoal.protocol.transfer.flow import Flow
from shoal.protocol.transfer.states import SendState
from shoal.wire.messages import ChunkRequest


class Upload:
    """Sender side of one request: the chunk's bytes and its per-packet bookkeeping.

    Every transmission gets a new packet number (RFC 9002 §2). ``sent_segment`` and
    ``sent_time`` are indexed by packet number, ``acked``, ``in_flight`` and
    ``last_packet`` (the packet number of the segment's latest transmission) by segment;
    ``queue`` holds the packet numbers in flight, oldest first, for loss detection;
    ``retransmit`` the segments declared lost, to send again first.
    """

    __slots__ = (
        "acked",
        "acked_count",
        "chunk_index",
        "chunk_length",
        "content_id",
        "cumulative",
        "data",
        "flow",
        "in_flight",
        "largest_acked_packet",
        "last_heard",
        "last_packet",
        "loss_time",
        "mode",
        "next_new",
        "order",
        "peer",
        "peer_window",
        "queue",
        "request_id",
        "retransmit",
        "rto_deadline",
        "segment_count",
        "segment_size",
        "sent_segment",
        "sent_time",
        "state",
        "timeouts",
    )

    def __init__(self, peer: Address, request: ChunkRequest, now: float, order: int) -> None:
        self.peer = peer
        #: Creation order: timers due at the same wake-up fire in this order.
        self.order = order
        self.request_id = request.request_id
        self.content_id = request.content_id
        self.chunk_index = request.chunk_index
        # What is sent: a resumed chunk's remainder, the bytes from ``request.offset``
        # on (the sender checked it is a segment inside the chunk), else the chunk.
        self.chunk_length = request.chunk_length - request.offset
        self.mode = request.mode
        self.segment_size = request.segment_size
        self.segment_count = -(-self.chunk_length // request.segment_size)
        self.peer_window = request.receive_window
        self.state = SendState.AWAITING_APPLICATION
        self.last_heard = now
        self.data: memoryview | None = None
        self.flow: Flow | None = None
        self.acked = bytearray()
        self.in_flight = bytearray()
        self.last_packet = array("l")
        self.sent_segment = array("L")
        self.sent_time = array("d")
        self.queue: deque[int] = deque()
        self.retransmit: deque[int] = deque()
        self.acked_count = 0
        self.cumulative = 0
        self.next_new = 0
        self.largest_acked_packet = -1
        self.rto_deadline: float | None = None
        self.loss_time: float | None = None
        self.timeouts = 0

    @property
    def heard(self) -> float:
        """The last sign that the peer still takes what we send for this upload: its
        request, the start of its data, or an ACK on the flow it queues in (a flow's
        uploads go out one after another). New requests and repeated ones of the same
        peer are no such sign: a peer that asks and never acknowledges would otherwise
        hold its uploads for ever (docs/security.md, "stalling peer")."""
        flow = self.flow
        if flow is not None and flow.last_ack_time > self.last_heard:
            return flow.last_ack_time
        return self.last_heard

    def start(self, data: memoryview, flow: Flow) -> None:
        self.data = data
        self.flow = flow
        self.acked = bytearray(self.segment_count)
        self.in_flight = bytearray(self.segment_count)
        self.last_packet = array("l", [-1]) * self.segment_count
