"""The transfer engine: reliable, congestion-controlled chunk transfer over datagrams.

Theory of operation
-------------------
One ``TransferEngine`` serves one local UDP socket: it receives chunks it asked for and
sends chunks peers asked for, to and from many peers at once. It never touches a socket
or a clock: the shell hands it datagrams (``receive_datagram``) and timer expiries
(``handle_timer``), and collects what to send (``datagrams_to_send``), when to wake it
(``get_timer``) and what happened (``next_event``) -- the aioquic model.

*Receiving.* ``request_chunk`` sends CHUNK_REQUEST, repeated on an RFC 6298 timer
(from measured answer latency) until answered, and at once when a later request to the
same peer is answered first (peers serve in order: the earlier one was lost). DATA
segments are copied once, by slice assignment, into a buffer of the chunk's length
allocated on the first segment. The receiver acknowledges every ``ack_every_packets``
packets, after ``max_ack_delay`` at the latest, and at once when a new gap appears (so
the sender learns of a loss within a round trip). An ACK carries the cumulative segment
count, up to ``max_ack_ranges`` ranges above it, the largest packet number seen (for
RTT), and the one-way delay of the newest packet (for LEDBAT). The last segment
triggers a SHA-256 check: ``ChunkReceived`` or ``ChunkCorrupted`` naming the peer.

*Sending.* ``ChunkRequested`` asks the application for the bytes; ``send_chunk`` hands
them over (kept by reference, never copied). Each (peer, mode) pair is a *flow* with
its own RTT estimator (RFC 6298), congestion controller (``DelayReno`` in the
foreground, LEDBAT in the background) and pacer; the flow sends its oldest chunk first, so chunks
finish in order and each one's packets stay dense. Every transmission gets a new
packet number, so a loss is declared per RFC 9002 §6.1 (``packet_threshold`` later
packets acknowledged, or 9/8 RTT passed since a later one was). A lost tail is found
by probe timeouts (RFC 9002 §6.2: two probes, window untouched), then by the RTO
proper, which collapses the window only if the whole flow went unacknowledged (RFC
9002 §7.6). All per-packet bookkeeping lives in preallocated ``bytearray``/``array``
tables indexed by segment or packet number; the hot path allocates only the outgoing
datagram, and ``datagrams_to_send`` returns each flow's data back to back, full-size
datagrams of equal length to one address, ready for one GSO ``sendmsg``.

*Address validation* (RFC 9000 §8.1). A request is served only when it carries the
token this engine computed for the requester's address (``AddressValidator``: a keyed
hash, no state). A request without it gets a 16-byte RETRY with the token (RFC 9000
§8.1.2), nothing else: no upload, no event, no read of the store. The requester keeps
the token per sender (RFC 9000 §8.1.3) and asks again at once, so the first request to
a sender costs one round trip and every later one nothing; DATA packets are unchanged.
Every reply an unvalidated address can provoke (RETRY, VERSION_ERROR, CANCEL of stray
data, a repeated final ACK) is one datagram smaller than 3x the one it answers, under
a total rate (``unvalidated_reply_rate``).

*Bounds.* Downloads, uploads (in total and per source IP), idle flows, remembered
request IDs, remembered tokens, queued control datagrams, transmissions per chunk, and
chunk requests per second per source IP are all capped by ``TransferConfig``;
whatever a peer sends beyond them is refused or dropped, and counted in
``TransferCounters``.

State transitions are in ``states.py`` as data tables.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, fields
from typing import TypeVar

from shoal.core.ids import ContentId
from shoal.protocol.ratelimit import TokenBucket
from shoal.protocol.transfer.config import TransferConfig
from shoal.protocol.transfer.congestion import DelayReno, Ledbat, RttEstimator
from shoal.protocol.transfer.events import (
    Address,
    ChunkCorrupted,
    ChunkDelivered,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    Event,
    RequestCancelled,
    Role,
    TransferTimedOut,
    VersionRejected,
)
from shoal.protocol.transfer.states import (
    LocalProtocolError,
    ReceiveInput,
    ReceiveState,
    SendInput,
    SendState,
    TooManyDownloads,
    next_receive_state,
    next_send_state,
)
from shoal.protocol.validation import AddressValidator, SourceLimiter
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic
from shoal.wire.messages import (
    DATA_HEADER,
    DATA_HEADER_SIZE,
    MAGIC,
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    NO_TOKEN,
    PROTOCOL_VERSION,
    Ack,
    Cancel,
    ChunkRequest,
    Data,
    Have,
    MessageType,
    Mode,
    Refusal,
    RefusalReason,
    Retry,
    VersionError,
    WhoHas,
    decode_datagram,
    encode_datagram,
)

_K = TypeVar("_K")
#: The DATA header read as five words: the 4-byte prefix compares as one integer.
_DATA_WORDS = struct.Struct(">IIIII")
_DATA_PREFIX = int.from_bytes(MAGIC + bytes([PROTOCOL_VERSION, MessageType.DATA]), "big")
_ACK_HEAD = struct.Struct(">2sBBIIIIIIB")
_ACK_RANGE = struct.Struct(">II")
_DATA_CODE = int(MessageType.DATA)
_U32_MASK = 0xFFFFFFFF
_HALF_U32 = 1 << 31
#: RFC 9002 §6.1.1 kPacketThreshold.
_PACKET_THRESHOLD = 3
#: RFC 9002 §6.1.2 kTimeThreshold.
_TIME_THRESHOLD = 9 / 8
_MAX_PACKET_THRESHOLD = 32
#: Fewest packets the pacer lets go back to back.
_MIN_BURST = 4
#: Shortest interval between answers to late datagrams about one finished request.
_LATE_REPLY_INTERVAL = 0.001
#: Probe timeouts in a row before the retransmission timeout proper (and its collapse
#: of the window): one lost probe or probe ACK is not persistent congestion.
_PROBES_BEFORE_RTO = 2
#: Packets over which a flow's recent loss rate is measured (halved when exceeded).
_LOSS_MEMORY = 2000


@dataclass(slots=True)
class TransferCounters:
    """What the engine saw and did; every dropped or refused input is counted here."""

    datagrams_received: int = 0
    datagrams_sent: int = 0
    data_packets_sent: int = 0
    data_packets_retransmitted: int = 0
    payload_bytes_sent: int = 0
    payload_bytes_received: int = 0
    acks_sent: int = 0
    acks_received: int = 0
    chunks_received: int = 0
    chunks_delivered: int = 0
    #: Dropped: not a shoal datagram at all.
    wrong_magic: int = 0
    #: Dropped and answered with VERSION_ERROR.
    unsupported_version: int = 0
    version_errors_sent: int = 0
    version_errors_received: int = 0
    #: Dropped: truncated, oversized, or a field out of range.
    malformed: int = 0
    #: Dropped: about a transfer, from an address we have no transfer with.
    unknown_sender: int = 0
    #: Dropped: from a known peer, about a request ID it has no transfer under.
    unknown_request: int = 0
    #: About a request that just finished (answered when useful, else dropped).
    late_datagrams: int = 0
    #: Dropped: a segment index beyond the chunk, or a payload of the wrong length.
    data_outside_chunk: int = 0
    duplicate_data: int = 0
    #: Dropped: an ACK for segments or packets never sent, or out of protocol order.
    invalid_acks: int = 0
    #: Refused as INVALID_REQUEST: a chunk length or segment size this engine does not
    #: accept, or (by the application) a chunk index beyond the content.
    requests_invalid: int = 0
    #: Refused by the application, any reason (``refuse_chunk``).
    requests_refused: int = 0
    #: Refused BUSY: over ``max_uploads`` or ``max_uploads_per_peer``.
    requests_refused_busy: int = 0
    #: Answered RETRY, not served: no valid token for its source address (RFC 9000 §8.1).
    requests_unvalidated: int = 0
    #: Dropped: over the source IP's request rate (RFC 8085 §6).
    requests_rate_limited: int = 0
    #: Not sent: a reply to an unvalidated address over ``unvalidated_reply_rate``
    #: (RFC 9000 §8.1: an unproven address must not drive our sending).
    unvalidated_replies_dropped: int = 0
    retries_sent: int = 0
    retries_received: int = 0
    #: Not sent: a request (or its repeat) to a peer IP that never answered, over
    #: ``unproven_request_sends`` (RFC 9000 §8.1); the request waits for its timer.
    requests_held: int = 0
    #: Dropped: a RETRY for no unanswered request of ours to that address, or with the
    #: token we just sent (RFC 9000 §17.2.5.2 discards such Retry packets).
    retries_ignored: int = 0
    duplicate_requests: int = 0
    #: Dropped: the control queue was full (the shell is not draining it).
    control_queue_overflow: int = 0
    #: Dropped: a discovery datagram (handled by the discovery machine, not here).
    discovery_datagrams: int = 0
    chunks_corrupted: int = 0
    transfers_timed_out: int = 0
    retransmission_timeouts: int = 0
    congestion_events: int = 0
    #: Losses declared that proved wrong (the original arrived), and reductions undone.
    spurious_losses: int = 0
    #: Tail-loss probes sent (first retransmission-timer expiry, RFC 9002 §6.2).
    probes_sent: int = 0
    congestion_events_undone: int = 0

    def as_dict(self) -> dict[str, int]:
        """All counters by name."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


class _Download:
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
    ) -> None:
        self.request_id = request_id
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


class _Flow:
    """Congestion state shared by every chunk we send to one peer in one mode."""

    __slots__ = (
        "cc",
        "in_flight",
        "key",
        "last_ack_time",
        "last_refill",
        "pacing_wait_until",
        "packet_threshold",
        "recent_lost",
        "recent_sent",
        "recovery_start",
        "rtt",
        "tokens",
        "undo_cwnd",
        "undo_ssthresh",
        "uploads",
    )

    def __init__(self, key: tuple[Address, Mode], config: TransferConfig, now: float) -> None:
        self.key = key
        self.cc: DelayReno | Ledbat = (
            Ledbat(config) if key[1] is Mode.BACKGROUND else DelayReno(config)
        )
        self.rtt = RttEstimator(config.initial_rtt, config.min_rto, config.max_rto)
        self.in_flight = 0
        self.tokens = float(config.pacing_burst_packets)
        self.last_refill = now
        self.pacing_wait_until: float | None = None
        self.recovery_start = float("-inf")
        self.last_ack_time = now
        # Packets sent and declared lost lately (exponentially forgotten every
        # _LOSS_MEMORY packets), for the foreground loss tolerance. The prior of
        # _LOSS_MEMORY / 4 clean packets keeps one early loss from looking like 100%.
        self.recent_sent = _LOSS_MEMORY / 4
        self.recent_lost = 0.0
        # RFC 9002 §6.1.1 starts at 3; raised when the path proves to reorder (RACK-like).
        self.packet_threshold = _PACKET_THRESHOLD
        # Window before the last reduction, restored if that loss proves spurious.
        self.undo_cwnd: float | None = None
        self.undo_ssthresh = 0.0
        self.uploads: list[_Upload] = []


class _Upload:
    """Sender side of one request."""

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

    def __init__(self, peer: Address, request: ChunkRequest, now: float) -> None:
        self.peer = peer
        self.request_id = request.request_id
        self.content_id = request.content_id
        self.chunk_index = request.chunk_index
        self.chunk_length = request.chunk_length
        self.mode = request.mode
        self.segment_size = request.segment_size
        self.segment_count = -(-request.chunk_length // request.segment_size)
        self.peer_window = request.receive_window
        self.state = SendState.AWAITING_APPLICATION
        self.last_heard = now
        self.data: memoryview | None = None
        self.flow: _Flow | None = None
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

    def start(self, data: memoryview, flow: _Flow) -> None:
        self.data = data
        self.flow = flow
        self.acked = bytearray(self.segment_count)
        self.in_flight = bytearray(self.segment_count)
        self.last_packet = array("l", [-1]) * self.segment_count


class _Finished:
    """What is remembered of a recently finished request, to answer late datagrams."""

    __slots__ = ("last_heard", "last_reply", "outcome", "peer", "reason", "segment_count")

    def __init__(
        self,
        peer: Address,
        outcome: ReceiveState | SendState,
        segment_count: int,
        last_heard: float,
        reason: RefusalReason | None = None,
    ) -> None:
        self.peer = peer
        self.last_heard = last_heard
        self.outcome = outcome
        self.segment_count = segment_count
        self.reason = reason
        self.last_reply = float("-inf")


class TransferEngine:
    """Sans-I/O chunk transfer for one local UDP socket (see the module docstring)."""

    def __init__(
        self, *, config: TransferConfig | None = None, now: float, token_key: bytes | None = None
    ) -> None:
        self.config = config or TransferConfig()
        self.counters = TransferCounters()
        limits = self.config
        # RFC 9000 §8.1: tokens (``token_key`` fixes the secret, for tests; else random).
        self._validator = AddressValidator(token_key, limits.token_lifetime)
        self._source_limits = SourceLimiter(
            limits.source_request_rate, limits.source_request_burst, limits.max_tracked_sources
        )
        self._unvalidated_replies = TokenBucket(
            limits.unvalidated_reply_rate, max(limits.unvalidated_reply_rate / 10, 1.0), now
        )
        #: Tokens senders gave us for our address (RETRY), by sender address: a peer
        #: with one has answered us, so it is a live shoal port, not a victim.
        self._peer_tokens: OrderedDict[Address, bytes] = OrderedDict()
        self._unproven_sends = SourceLimiter(
            # Refilled slower than a silent download times out (idle_timeout): the
            # agent drops a peer that never answered before it could be asked again.
            limits.unproven_request_sends / (2 * limits.idle_timeout),
            limits.unproven_request_sends,
            limits.max_tracked_sources,
        )
        self._uploads_per_ip: dict[str, int] = {}
        self._segment_size = self.config.segment_size
        self._ack_every = self.config.ack_every_packets
        # How long peers take to answer a request with data (for request repeats).
        self._answer_time = RttEstimator(
            self.config.initial_rtt, self.config.min_rto, self.config.max_rto
        )
        self._max_ack_delay = self.config.max_ack_delay
        self._downloads: dict[int, _Download] = {}
        self._downloads_per_peer: dict[Address, int] = {}
        self._uploads: dict[tuple[Address, int], _Upload] = {}
        self._uploads_per_peer: dict[Address, int] = {}
        self._flows: OrderedDict[tuple[Address, Mode], _Flow] = OrderedDict()
        self._sending_flows: dict[tuple[Address, Mode], _Flow] = {}
        self._finished_downloads: OrderedDict[int, _Finished] = OrderedDict()
        self._finished_uploads: OrderedDict[tuple[Address, int], _Finished] = OrderedDict()
        self._stray_cancels: OrderedDict[tuple[Address, int], float] = OrderedDict()
        self._ack_now: dict[int, _Download] = {}
        self._control: list[tuple[bytes, Address]] = []
        self._events: deque[Event] = deque()
        # Derived from the clock, so a restarted process does not reuse the IDs that
        # its peers still remember as finished (they would ignore the new requests).
        self._next_request_id = (int(now * 1_000_000) & _U32_MASK) or 1
        self._created = now

    # ----------------------------------------------------------------------------------
    # Receiver side: user calls
    # ----------------------------------------------------------------------------------

    def request_chunk(
        self,
        peer: Address,
        content_id: ContentId,
        chunk_index: int,
        chunk_length: int,
        chunk_hash: bytes,
        mode: Mode,
        now: float,
    ) -> int:
        """Ask ``peer`` for a chunk; return the request ID its events will carry.

        The chunk is checked against ``chunk_hash`` (SHA-256) once complete.
        Raises ``TooManyDownloads`` beyond ``config.max_downloads`` at once.
        """
        if len(self._downloads) >= self.config.max_downloads:
            raise TooManyDownloads(
                f"already receiving {len(self._downloads)} chunks "
                f"(max_downloads = {self.config.max_downloads})"
            )
        if not 0 < chunk_length <= self.config.max_chunk_length:
            raise LocalProtocolError(f"chunk length {chunk_length} out of range")
        if len(chunk_hash) != 32:
            raise LocalProtocolError("chunk_hash must be a 32-byte SHA-256 digest")
        request_id = self._next_request_id
        self._next_request_id = (request_id + 1) & _U32_MASK or 1
        download = _Download(
            request_id,
            peer,
            content_id,
            chunk_index,
            chunk_length,
            chunk_hash,
            Mode(mode),
            self._segment_size,
            now,
        )
        self._downloads[request_id] = download
        self._downloads_per_peer[peer] = self._downloads_per_peer.get(peer, 0) + 1
        self._send_request(download, now)
        return request_id

    def address_token(self, addr: Address, now: float) -> bytes:
        """The token this engine accepts in requests from ``addr`` (RFC 9000 §8.1)."""
        return self._validator.token(addr, now)

    def cancel(self, request_id: int, now: float) -> None:
        """Stop receiving a chunk; the peer is told. Unknown or finished IDs are ignored."""
        download = self._downloads.get(request_id)
        if download is None:
            return
        if download.peer in self._peer_tokens:  # nothing to tell a peer that never answered
            self._queue_control(encode_datagram(Cancel(request_id)), download.peer)
        self._end_download(download, ReceiveInput.USER_CANCELLED)

    # ----------------------------------------------------------------------------------
    # Sender side: answers to ChunkRequested
    # ----------------------------------------------------------------------------------

    def send_chunk(
        self, peer: Address, request_id: int, data: bytes | memoryview, now: float
    ) -> None:
        """Serve a requested chunk. ``data`` is kept by reference until delivered.

        A request that ended meanwhile (cancelled, timed out) is silently ignored.
        """
        upload = self._uploads.get((peer, request_id))
        if upload is None:
            if (peer, request_id) in self._finished_uploads:
                return
            raise LocalProtocolError(f"no chunk request {request_id} from {peer}")
        if len(data) != upload.chunk_length:
            raise LocalProtocolError(
                f"chunk request {request_id} is for {upload.chunk_length} bytes, got {len(data)}"
            )
        self._move_upload(upload, SendInput.APPLICATION_SENT)
        key = (peer, upload.mode)
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = _Flow(key, self.config, now)
        self._flows.move_to_end(key)
        upload.start(memoryview(data).cast("B"), flow)
        upload.last_heard = now
        flow.uploads.append(upload)
        self._sending_flows[key] = flow

    def abandon_peer(self, peer: Address) -> int:
        """End every upload to ``peer``: the network said nothing listens there any more.

        For an ICMP port unreachable (``ECONNREFUSED``; RFC 1122 §4.1.3.3 passes it up to
        UDP's user): the peer's process died or restarted, and a restarted one asks
        again under new request IDs. Without this, the flow keeps sending the dead
        requests (oldest first, ahead of the new ones) until probes and timeouts give
        up, and across a WAN that is the office's bandwidth wasted. Each upload ends as
        if the peer had cancelled it. Returns how many ended.
        """
        uploads = [upload for upload in self._uploads.values() if upload.peer == peer]
        for upload in uploads:
            self._events.append(
                RequestCancelled(peer, upload.request_id, upload.content_id, upload.chunk_index)
            )
            self._move_upload(upload, SendInput.PEER_CANCELLED)
            self._forget_upload(upload)
        return len(uploads)

    def refuse_chunk(
        self, peer: Address, request_id: int, reason: RefusalReason, now: float
    ) -> None:
        """Decline a requested chunk; the peer gets ``ChunkRefused`` with ``reason``."""
        upload = self._uploads.get((peer, request_id))
        if upload is None:
            if (peer, request_id) in self._finished_uploads:
                return
            raise LocalProtocolError(f"no chunk request {request_id} from {peer}")
        self._move_upload(upload, SendInput.APPLICATION_REFUSED)
        self.counters.requests_refused += 1
        if reason is RefusalReason.INVALID_REQUEST:
            # e.g. a chunk index beyond the content, which only the application knows.
            self.counters.requests_invalid += 1
        self._queue_control(encode_datagram(Refusal(request_id, reason)), peer)
        self._forget_upload(upload, reason)

    # ----------------------------------------------------------------------------------
    # Driven by the shell
    # ----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        """Handle one received datagram. Never raises for anything a peer can send."""
        counters = self.counters
        counters.datagrams_received += 1
        size = len(data)
        if size <= DATA_HEADER_SIZE:
            self._receive_other(data, addr, now)
            return
        # Hot path, inlined on purpose: a DATA datagram of our version costs one unpack,
        # one dict lookup and one copy of the payload into the chunk's buffer.
        prefix, request_id, packet_number, segment_index, timestamp_us = _DATA_WORDS.unpack_from(
            data
        )
        if prefix != _DATA_PREFIX:
            self._receive_other(data, addr, now)
            return
        download = self._downloads.get(request_id)
        if download is None or download.peer != addr:
            self._on_stray(request_id, addr, now, is_data=True)
            return
        payload_length = size - DATA_HEADER_SIZE
        if segment_index >= download.segment_count or payload_length != (
            download.segment_size
            if segment_index != download.last_segment
            else download.last_length
        ):
            counters.data_outside_chunk += 1
            return
        download.last_heard = now
        buffer = download.buffer
        if buffer is None:
            self._move_download(download, ReceiveInput.DATA_ARRIVED)
            buffer = download.buffer = bytearray(download.chunk_length)
            if download.requests_sent == 1:
                # Karn (RFC 6298 §3): time only requests that were sent once.
                self._answer_time.on_sample(now - download.requested_at)
            self._repeat_overtaken_requests(download, now)
        if packet_number > download.largest_packet_number:
            download.largest_packet_number = packet_number
            download.largest_time = now
            download.largest_timestamp_us = timestamp_us
        # The delay sample an ACK carries is the least over the packets it covers: the
        # first packet of a paced burst, not its tail, which waited behind the burst
        # itself (RFC 6817 §3.4.2 filters delays with a minimum for the same reason).
        delay_us = (int(now * 1_000_000) - timestamp_us) & _U32_MASK
        least = download.least_delay_us
        if least < 0 or (delay_us - least) & _U32_MASK > _HALF_U32:
            download.least_delay_us = delay_us
        received = download.received
        ack_at_once = False
        if received[segment_index]:
            counters.duplicate_data += 1
        else:
            offset = segment_index * download.segment_size
            buffer[offset : offset + payload_length] = data[DATA_HEADER_SIZE:]
            received[segment_index] = 1
            download.received_count += 1
            counters.payload_bytes_received += payload_length
            if segment_index == download.cumulative:
                cumulative = received.find(0, segment_index + 1)
                download.cumulative = download.segment_count if cumulative < 0 else cumulative
            elif segment_index > download.highest_segment + 1:
                # A new gap: tell the sender now (RFC 9000 §13.2.1 acks out-of-order at once).
                ack_at_once = True
            if segment_index > download.highest_segment:
                download.highest_segment = segment_index
            if download.received_count == download.segment_count:
                self._complete_download(download, now)
                return
        download.unacked += 1
        if ack_at_once or download.unacked >= self._ack_every:
            self._ack_now[request_id] = download
        elif download.ack_deadline is None:
            download.ack_deadline = now + self._max_ack_delay

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``: acks, request retries, RTOs, idle timeouts."""
        idle_timeout = self.config.idle_timeout
        heard = self._peers_last_heard()
        for download in list(self._downloads.values()):
            if self._silent_deadline(download, heard) + idle_timeout <= now:
                if download.peer in self._peer_tokens:
                    self._queue_control(encode_datagram(Cancel(download.request_id)), download.peer)
                self._end_download(download, ReceiveInput.PEER_SILENT)
                continue
            if download.ack_deadline is not None and download.ack_deadline <= now:
                self._ack_now[download.request_id] = download
            if download.state is ReceiveState.REQUESTED and download.retry_at <= now:
                self._send_request(download, now)
        for upload in list(self._uploads.values()):
            if self._upload_heard(upload) + idle_timeout <= now:
                self._end_upload_silent(upload)
                continue
            if upload.loss_time is not None and upload.loss_time <= now:
                self._detect_losses(upload, now)
            if upload.rto_deadline is not None and upload.rto_deadline <= now:
                self._on_retransmission_timeout(upload, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything to send now: control datagrams first, then paced data, grouped by peer."""
        out = self._control
        self._control = []
        if self._ack_now:
            for download in self._ack_now.values():
                out.append((self._build_ack(download, now), download.peer))
            self._ack_now.clear()
        for flow in list(self._sending_flows.values()):
            self._send_flow(flow, now, out)
        self.counters.datagrams_sent += len(out)
        return out

    def get_timer(self) -> float | None:
        """When ``handle_timer``/``datagrams_to_send`` must next be called (None: never)."""
        deadline = float("inf")
        idle_timeout = self.config.idle_timeout
        heard = self._peers_last_heard()
        for download in self._downloads.values():
            candidate = self._silent_deadline(download, heard) + idle_timeout
            if download.ack_deadline is not None and download.ack_deadline < candidate:
                candidate = download.ack_deadline
            if download.state is ReceiveState.REQUESTED and download.retry_at < candidate:
                candidate = download.retry_at
            if candidate < deadline:
                deadline = candidate
        for upload in self._uploads.values():
            candidate = self._upload_heard(upload) + idle_timeout
            if upload.rto_deadline is not None and upload.rto_deadline < candidate:
                candidate = upload.rto_deadline
            if upload.loss_time is not None and upload.loss_time < candidate:
                candidate = upload.loss_time
            if candidate < deadline:
                deadline = candidate
        for flow in self._sending_flows.values():
            if flow.pacing_wait_until is not None and flow.pacing_wait_until < deadline:
                deadline = flow.pacing_wait_until
        return None if deadline == float("inf") else deadline

    def _peers_last_heard(self) -> dict[Address, float]:
        """When each peer we download from last sent us something useful.

        A peer is silent when none of its transfers, in either direction, has heard from
        it: a download waiting its turn behind others of the same peer is not abandoned.
        """
        heard: dict[Address, float] = {}
        for download in self._downloads.values():
            if heard.get(download.peer, float("-inf")) < download.last_heard:
                heard[download.peer] = download.last_heard
        for upload in self._uploads.values():
            if heard.get(upload.peer, float("-inf")) < upload.last_heard:
                heard[upload.peer] = upload.last_heard
        return heard

    @staticmethod
    def _upload_heard(upload: _Upload) -> float:
        """The last sign that ``upload``'s peer still takes what we send: the request, the
        start of the data, or an ACK on the flow it queues in (uploads of a flow go out
        one after another). New requests and repeated ones are no such sign: a peer
        that asks and never acknowledges would otherwise hold its uploads for ever."""
        flow = upload.flow
        if flow is not None and flow.last_ack_time > upload.last_heard:
            return flow.last_ack_time
        return upload.last_heard

    @staticmethod
    def _silent_deadline(download: _Download, heard: dict[Address, float]) -> float:
        # A request queued behind others of a live peer waits: the peer serves its oldest
        # chunks first. (An application that never answers is for the caller to cancel.)
        return heard[download.peer]

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    # -- introspection for statistics and tests ------------------------------------------

    @property
    def active_downloads(self) -> int:
        return len(self._downloads)

    @property
    def active_uploads(self) -> int:
        return len(self._uploads)

    def flow_window(self, peer: Address, mode: Mode) -> float | None:
        """Congestion window (packets) of our flow to ``peer`` in ``mode``, if any."""
        flow = self._flows.get((peer, mode))
        return None if flow is None else flow.cc.cwnd

    def flow_srtt(self, peer: Address, mode: Mode) -> float | None:
        """Smoothed RTT (seconds) of our flow to ``peer`` in ``mode``, if measured."""
        flow = self._flows.get((peer, mode))
        return None if flow is None else flow.rtt.srtt

    # ----------------------------------------------------------------------------------
    # Receiving data
    # ----------------------------------------------------------------------------------

    def _build_ack(self, download: _Download, now: float) -> bytes:
        download.unacked = 0
        download.ack_deadline = None
        delay_us = download.least_delay_us
        if delay_us < 0:
            delay_us = (
                int(download.largest_time * 1_000_000) - download.largest_timestamp_us
            ) & _U32_MASK
        download.least_delay_us = -1
        received = download.received
        count = download.segment_count
        ranges: list[int] = []
        position = download.cumulative
        limit = self.config.max_ack_ranges
        while position < count and len(ranges) < 2 * limit:
            start = received.find(1, position)
            if start < 0:
                break
            end = received.find(0, start)
            if end < 0:
                end = count
            ranges.append(start)
            ranges.append(end)
            position = end
        self.counters.acks_sent += 1
        head = _ACK_HEAD.pack(
            MAGIC,
            PROTOCOL_VERSION,
            MessageType.ACK,
            download.request_id,
            max(download.largest_packet_number, 0),
            min(int((now - download.largest_time) * 1_000_000), _U32_MASK),
            # RFC 6817 §3.3: one-way delay from the sender's stamps, the least since the
            # last ACK (the newest packet's when every packet since was a duplicate).
            delay_us,
            download.cumulative,
            self.config.receive_window_packets,
            len(ranges) // 2,
        )
        if not ranges:
            return head
        return head + struct.pack(f">{len(ranges)}I", *ranges)

    def _complete_download(self, download: _Download, now: float) -> None:
        buffer = download.buffer
        assert buffer is not None
        # The final ACK goes out at once, twice: the sender can free the chunk, and
        # if both copies are lost it learns only from a timeout.
        final_ack = self._build_ack(download, now)
        self._queue_control(final_ack, download.peer)
        self._queue_control(final_ack, download.peer)
        self._ack_now.pop(download.request_id, None)
        if hashlib.sha256(buffer).digest() == download.chunk_hash:
            self.counters.chunks_received += 1
            self._events.append(
                ChunkReceived(
                    download.peer,
                    download.request_id,
                    download.content_id,
                    download.chunk_index,
                    bytes(buffer),
                )
            )
            self._end_download(download, ReceiveInput.CHUNK_VERIFIED, emit=False)
        else:
            self.counters.chunks_corrupted += 1
            self._end_download(download, ReceiveInput.CHUNK_MISMATCHED)

    def _repeat_overtaken_requests(self, answered: _Download, now: float) -> None:
        """Repeat at once requests to the same peer sent before ``answered`` and still
        unanswered: peers serve requests in order, so these were most likely lost (the
        packet-threshold idea of RFC 9002 §6.1.1, applied to requests)."""
        if self._downloads_per_peer.get(answered.peer, 0) < 2:
            return
        for download in self._downloads.values():
            if (
                download.state is ReceiveState.REQUESTED
                and download.peer == answered.peer
                and download.requests_sent == 1
                and (
                    download.requested_at < answered.requested_at
                    or (
                        download.requested_at == answered.requested_at
                        and download.request_id < answered.request_id
                    )
                )
            ):
                self._queue_control(self._request_datagram(download), download.peer)
                download.requests_sent += 1

    def _request_datagram(self, download: _Download) -> bytes:
        """The request, with the token its sender gave us (re-encoded when it changes)."""
        token = self._peer_tokens.get(download.peer, NO_TOKEN)
        if token != download.token_sent or not download.request_datagram:
            download.token_sent = token
            download.request_datagram = encode_datagram(
                ChunkRequest(
                    request_id=download.request_id,
                    content_id=download.content_id,
                    chunk_index=download.chunk_index,
                    chunk_length=download.chunk_length,
                    mode=download.mode,
                    segment_size=download.segment_size,
                    receive_window=self.config.receive_window_packets,
                    token=token,
                )
            )
        return download.request_datagram

    def _on_retry(self, retry: Retry, addr: Address, now: float) -> None:
        """The sender wants proof that we receive at our address: ask again with its
        token, and keep the token for every later request to it (RFC 9000 §8.1.2-3)."""
        download = self._downloads.get(retry.request_id)
        if (
            download is None
            or download.peer != addr
            or download.state is not ReceiveState.REQUESTED
            or retry.token in (NO_TOKEN, download.token_sent)
        ):
            self.counters.retries_ignored += 1
            return
        self.counters.retries_received += 1
        tokens = self._peer_tokens
        tokens[addr] = retry.token
        tokens.move_to_end(addr)
        while len(tokens) > self.config.max_peer_tokens:
            tokens.popitem(last=False)
        # Every unanswered request to that sender goes again now, with the token: each
        # was (or will be) answered by a RETRY too. Timing restarts (Karn, RFC 6298 §3).
        for waiting in list(self._downloads.values()):
            if (
                waiting.peer == addr
                and waiting.state is ReceiveState.REQUESTED
                and waiting.token_sent != retry.token
            ):
                waiting.requests_sent = 0
                waiting.retry_interval = 0.0
                waiting.requested_at = now
                self._send_request(waiting, now)

    def has_answered(self, peer: Address) -> bool:
        """Has ``peer`` ever answered us (a RETRY with its token)? A peer that never did
        may be a forged address, not a shoal port."""
        return peer in self._peer_tokens

    def _send_request(self, download: _Download, now: float) -> None:
        peer = download.peer
        if peer in self._peer_tokens or self._unproven_sends.admit(peer[0], now):
            self._queue_control(self._request_datagram(download), peer)
            download.requests_sent += 1
        else:
            self.counters.requests_held += 1
        # Repeat the request on an RFC 6298 timer, computed from how long requests
        # take to be answered, doubling (§5.5) until answered. A repeat the peer
        # did not need costs it one ignored datagram.
        interval = download.retry_interval
        interval = self._answer_time.rto if not interval else interval * 2
        download.retry_interval = min(interval, self.config.max_rto)
        download.retry_at = now + download.retry_interval

    def _move_download(self, download: _Download, event: ReceiveInput) -> None:
        state = next_receive_state(download.state, event)
        if state is None:
            raise LocalProtocolError(f"receive {download.state.value}: no move on {event.value}")
        download.state = state

    def _end_download(self, download: _Download, event: ReceiveInput, *, emit: bool = True) -> None:
        """Move a download to its terminal state, report it, and forget its buffers."""
        self._move_download(download, event)
        request_id, peer = download.request_id, download.peer
        if emit:
            if event is ReceiveInput.CHUNK_MISMATCHED:
                self._events.append(
                    ChunkCorrupted(peer, request_id, download.content_id, download.chunk_index)
                )
            elif event is ReceiveInput.PEER_SILENT:
                self.counters.transfers_timed_out += 1
                self._events.append(
                    TransferTimedOut(
                        peer, request_id, download.content_id, download.chunk_index, Role.RECEIVER
                    )
                )
        del self._downloads[request_id]
        self._ack_now.pop(request_id, None)
        self._pass_on_liveness(peer, download.last_heard)
        remaining = self._downloads_per_peer[peer] - 1
        if remaining:
            self._downloads_per_peer[peer] = remaining
        else:
            del self._downloads_per_peer[peer]
        download.buffer = None
        self._remember(
            self._finished_downloads,
            request_id,
            _Finished(peer, download.state, download.segment_count, download.last_heard),
        )

    def _refuse_download(self, download: _Download, reason: RefusalReason) -> None:
        self._events.append(
            ChunkRefused(
                download.peer,
                download.request_id,
                download.content_id,
                download.chunk_index,
                reason,
            )
        )
        self._end_download(download, ReceiveInput.REFUSAL_ARRIVED)

    # ----------------------------------------------------------------------------------
    # Everything but DATA
    # ----------------------------------------------------------------------------------

    def _receive_other(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        counters = self.counters
        try:
            message = decode_datagram(data)
        except WrongMagic:
            counters.wrong_magic += 1
            return
        except UnsupportedProtocolVersion:
            counters.unsupported_version += 1
            # Every message carries a version; an unsupported one gets an explicit answer.
            # The reply (6 bytes) is at most 1.5x the shortest datagram that gets one
            # (a 4-byte prefix): within RFC 9000 §8.1's 3x.
            if self._reply_unvalidated(
                encode_datagram(VersionError(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION)), addr, now
            ):
                counters.version_errors_sent += 1
            return
        except MalformedDatagram:
            counters.malformed += 1
            return
        if isinstance(message, Ack):
            self._on_ack(message, addr, now)
        elif isinstance(message, ChunkRequest):
            self._on_request(message, addr, now)
        elif isinstance(message, Refusal):
            download = self._downloads.get(message.request_id)
            if download is None or download.peer != addr:
                self._on_stray(message.request_id, addr, now, is_data=False)
                return
            self._refuse_download(download, message.reason)
        elif isinstance(message, Cancel):
            upload = self._uploads.get((addr, message.request_id))
            if upload is None:
                self._on_stray_upload(message.request_id, addr)
                return
            self._events.append(
                RequestCancelled(addr, upload.request_id, upload.content_id, upload.chunk_index)
            )
            self._move_upload(upload, SendInput.PEER_CANCELLED)
            self._forget_upload(upload)
        elif isinstance(message, VersionError):
            self._on_version_error(message, addr)
        elif isinstance(message, Retry):
            self._on_retry(message, addr, now)
        elif isinstance(message, Data):
            # Our version, but a DATA datagram the fast path did not take (too short).
            counters.malformed += 1
        elif isinstance(message, WhoHas | Have):
            counters.discovery_datagrams += 1

    def _on_version_error(self, message: VersionError, addr: Address) -> None:
        self.counters.version_errors_received += 1
        if not self._downloads_per_peer.get(addr) and not self._uploads_per_peer.get(addr):
            self.counters.unknown_sender += 1
            return
        self._events.append(VersionRejected(addr, message.min_version, message.max_version))
        # Only requests not yet answered end: a peer already sending us data of our
        # version evidently speaks it (and a forged version error must not end it).
        for download in [
            d for d in self._downloads.values() if d.peer == addr and d.buffer is None
        ]:
            self._refuse_download(download, RefusalReason.UNSUPPORTED_VERSION)

    def _on_stray(self, request_id: int, addr: Address, now: float, *, is_data: bool) -> None:
        """A datagram about a request this engine is not receiving (any more)."""
        finished = self._finished_downloads.get(request_id)
        if finished is None or finished.peer != addr:
            if self._downloads_per_peer.get(addr) or self._uploads_per_peer.get(addr):
                self.counters.unknown_request += 1
            else:
                self.counters.unknown_sender += 1
            if is_data:
                self._cancel_stray(request_id, addr, now)
            return
        self.counters.late_datagrams += 1
        # At most one answer per millisecond: enough for probes, too few for a storm.
        if not is_data or now - finished.last_reply < _LATE_REPLY_INTERVAL:
            return
        finished.last_reply = now
        if finished.outcome in (ReceiveState.RECEIVED, ReceiveState.CORRUPTED):
            # Our final ACK was lost: repeat it so the sender can stop.
            reply = encode_datagram(
                Ack(request_id, 0, 0, 0, finished.segment_count, self.config.receive_window_packets)
            )
        else:
            reply = encode_datagram(Cancel(request_id))
        self._queue_control(reply, addr)

    def _cancel_stray(self, request_id: int, addr: Address, now: float) -> None:
        """Data for a request we never made (say, before we restarted): tell the sender.

        Like a TCP reset: without it a peer keeps retransmitting into a flow that will
        never be acknowledged, and that flow's window starves our new requests. At most
        one CANCEL per request per ``min_rto``, never larger than the data it answers.
        """
        key = (addr, request_id)
        last = self._stray_cancels.get(key)
        if last is not None and now - last < self.config.min_rto:
            return
        self._stray_cancels[key] = now
        self._stray_cancels.move_to_end(key)
        while len(self._stray_cancels) > self.config.recent_requests:
            self._stray_cancels.popitem(last=False)
        # 8 bytes for at least 21: never more than RFC 9000 §8.1 allows.
        self._reply_unvalidated(encode_datagram(Cancel(request_id)), addr, now)

    def _on_stray_upload(self, request_id: int, addr: Address) -> None:
        if (addr, request_id) in self._finished_uploads:
            self.counters.late_datagrams += 1
        elif self._downloads_per_peer.get(addr) or self._uploads_per_peer.get(addr):
            self.counters.unknown_request += 1
        else:
            self.counters.unknown_sender += 1

    # ----------------------------------------------------------------------------------
    # Sending side
    # ----------------------------------------------------------------------------------

    def _on_request(self, request: ChunkRequest, addr: Address, now: float) -> None:
        counters = self.counters
        if not self._source_limits.admit(addr[0], now):
            counters.requests_rate_limited += 1
            return
        if not self._validator.is_valid(request.token, addr, now):
            # RFC 9000 §8.1.2: the address must first prove it receives here. The RETRY
            # (16 bytes) answers a 63-byte request; nothing is kept, nothing is asked of
            # the application, so forged requests cost neither memory nor disk reads.
            counters.requests_unvalidated += 1
            retry = Retry(request.request_id, self._validator.token(addr, now))
            if self._reply_unvalidated(encode_datagram(retry), addr, now):
                counters.retries_sent += 1
            return
        key = (addr, request.request_id)
        upload = self._uploads.get(key)
        if upload is not None:
            self.counters.duplicate_requests += 1
            if upload.data is None:  # still waiting its turn: the peer still wants it
                upload.last_heard = now
            return
        finished = self._finished_uploads.get(key)
        if finished is not None and now - finished.last_heard > self.config.idle_timeout:
            # Too old to be a repeat: the peer restarted and reuses request IDs.
            del self._finished_uploads[key]
            finished = None
        if finished is not None:
            self.counters.duplicate_requests += 1
            if finished.reason is not None:
                # Our refusal was lost: say it again.
                self._queue_control(
                    encode_datagram(Refusal(request.request_id, finished.reason)), addr
                )
            return
        config = self.config
        if (
            request.chunk_length > config.max_chunk_length
            or request.segment_size > self._segment_size
            or request.segment_size < 64
        ):
            self.counters.requests_invalid += 1
            self._queue_control(
                encode_datagram(Refusal(request.request_id, RefusalReason.INVALID_REQUEST)), addr
            )
            return
        if (
            len(self._uploads) >= config.max_uploads
            or self._uploads_per_ip.get(addr[0], 0) >= config.max_uploads_per_peer
        ):
            self.counters.requests_refused_busy += 1
            self._queue_control(
                encode_datagram(Refusal(request.request_id, RefusalReason.BUSY)), addr
            )
            return
        upload = _Upload(addr, request, now)
        self._uploads[key] = upload
        self._uploads_per_peer[addr] = self._uploads_per_peer.get(addr, 0) + 1
        self._uploads_per_ip[addr[0]] = self._uploads_per_ip.get(addr[0], 0) + 1
        self._events.append(
            ChunkRequested(
                addr,
                request.request_id,
                request.content_id,
                request.chunk_index,
                request.chunk_length,
                request.mode,
            )
        )

    def _on_ack(self, ack: Ack, addr: Address, now: float) -> None:
        self.counters.acks_received += 1
        upload = self._uploads.get((addr, ack.request_id))
        if upload is None:
            self._on_stray_upload(ack.request_id, addr)
            return
        flow = upload.flow
        if flow is None or upload.data is None:
            # An ACK before we sent anything: out of protocol order.
            self.counters.invalid_acks += 1
            return
        sent_time = upload.sent_time
        largest = ack.largest_packet_number
        top = ack.ranges[-1][1] if ack.ranges else ack.cumulative
        if top > upload.next_new or largest >= len(sent_time):
            self.counters.invalid_acks += 1
            return
        upload.last_heard = now
        flow.last_ack_time = now
        upload.peer_window = ack.receive_window
        acked = upload.acked
        in_flight = upload.in_flight
        newly_acked = 0
        freed = 0
        spurious = 0
        spans = [(upload.cumulative, ack.cumulative), *ack.ranges]
        for start, end in spans:
            index = acked.find(0, start, end)
            while index >= 0:
                acked[index] = 1
                newly_acked += 1
                if in_flight[index]:
                    in_flight[index] = 0
                    freed += 1
                else:
                    # Declared lost, yet the original arrived: the path reordered it.
                    spurious += 1
                index = acked.find(0, index + 1, end)
        if ack.cumulative > upload.cumulative:
            upload.cumulative = ack.cumulative
        rtt = flow.rtt
        if largest > upload.largest_acked_packet:
            upload.largest_acked_packet = largest
            sample = now - sent_time[largest]
            ack_delay = ack.ack_delay_us / 1_000_000
            # RFC 9002 §5.3: subtract the peer's ack delay unless that undercuts min RTT.
            if sample - ack_delay >= min(rtt.min_rtt, sample):
                sample -= ack_delay
            rtt.on_sample(max(sample, 1e-6))
        flow.in_flight -= freed
        if spurious:
            self._on_spurious_loss(flow, spurious)
        lost = self._detect_losses(upload, now)
        cc = flow.cc
        if newly_acked:
            upload.timeouts = 0
            upload.acked_count += newly_acked
            # Every ACK carries a delay sample; growth waits for the end of recovery.
            in_recovery = sent_time[largest] <= flow.recovery_start
            cc.on_ack(newly_acked, flow.in_flight, now, ack.one_way_delay_us, in_recovery)
            if upload.acked_count == upload.segment_count:
                self.counters.chunks_delivered += 1
                self._events.append(
                    ChunkDelivered(addr, upload.request_id, upload.content_id, upload.chunk_index)
                )
                self._move_upload(upload, SendInput.ALL_ACKNOWLEDGED)
                self._forget_upload(upload)
                return
            # RFC 6298 §5.3: restart the timer when new data is acknowledged.
            if upload.queue:
                upload.rto_deadline = now + rtt.probe_timeout(self.config.max_ack_delay)
            else:
                upload.rto_deadline = None
        elif lost and upload.rto_deadline is None:
            upload.rto_deadline = now + rtt.probe_timeout(self.config.max_ack_delay)

    def _on_spurious_loss(self, flow: _Flow, count: int) -> None:
        """Undo the last reduction and tolerate more reordering (RFC 4015 Eifel response,
        RFC 8985 §6.2 RACK reordering window, in packet-count form)."""
        self.counters.spurious_losses += count
        if flow.packet_threshold < _MAX_PACKET_THRESHOLD:
            flow.packet_threshold += 1
        if flow.undo_cwnd is not None:
            cc = flow.cc
            cc.cwnd = max(cc.cwnd, flow.undo_cwnd)
            cc.ssthresh = max(cc.ssthresh, flow.undo_ssthresh)
            flow.undo_cwnd = None
            flow.recovery_start = float("-inf")
            self.counters.congestion_events_undone += 1

    def _detect_losses(self, upload: _Upload, now: float) -> int:
        """Declare lost what RFC 9002 §6.1 says is lost; return how many packets.

        A packet is lost when a packet sent at least ``_PACKET_THRESHOLD`` later was
        acknowledged (§6.1.1), or when 9/8 of an RTT passed since it was sent and a later
        one was acknowledged (§6.1.2); for the latter a loss timer is armed.
        """
        flow = upload.flow
        assert flow is not None
        rtt = flow.rtt
        queue = upload.queue
        acked = upload.acked
        in_flight = upload.in_flight
        sent_segment = upload.sent_segment
        sent_time = upload.sent_time
        last_packet = upload.last_packet
        retransmit = upload.retransmit
        largest_acked = upload.largest_acked_packet
        loss_delay = _TIME_THRESHOLD * max(rtt.smoothed, rtt.latest)
        recovery_start = flow.recovery_start
        packet_threshold = flow.packet_threshold
        lost = 0
        lost_after_recovery = False
        upload.loss_time = None
        while queue:
            packet_number = queue[0]
            segment = sent_segment[packet_number]
            if acked[segment] or last_packet[segment] != packet_number:
                queue.popleft()
                continue
            if packet_number >= largest_acked:
                break
            sent_at = sent_time[packet_number]
            lost_at = sent_at + loss_delay
            if largest_acked - packet_number < packet_threshold and lost_at > now:
                upload.loss_time = lost_at
                break
            queue.popleft()
            in_flight[segment] = 0
            retransmit.append(segment)
            lost += 1
            if sent_at > recovery_start:
                lost_after_recovery = True
        if lost:
            flow.in_flight -= lost
            flow.recent_lost += lost
            cc = flow.cc
            if lost_after_recovery and cc.loss_is_congestion(flow.recent_lost, flow.recent_sent):
                # One reduction per loss episode (RFC 6582 §3.2, RFC 9002 §7.3.2).
                flow.recovery_start = now
                flow.undo_cwnd = cc.cwnd
                flow.undo_ssthresh = cc.ssthresh
                cc.on_congestion(now)
                # The next reduction needs losses of its own, not this episode's again.
                flow.recent_lost = 0.0
                flow.recent_sent = _LOSS_MEMORY / 4
                self.counters.congestion_events += 1
        return lost

    def _on_retransmission_timeout(self, upload: _Upload, now: float) -> None:
        flow = upload.flow
        assert flow is not None
        self.counters.retransmission_timeouts += 1
        rtt = flow.rtt
        upload.timeouts += 1
        upload.loss_time = None
        if upload.timeouts <= _PROBES_BEFORE_RTO:
            # A probe timeout (RFC 9002 §6.2): the tail of the chunk was lost, or its ACK
            # was. Resend the two oldest unacknowledged segments (§6.2.4 allows two),
            # whatever the window says (§7.5); keep the window; back the timer off.
            self._send_probe(upload, now)
            self._send_probe(upload, now)
            pto = rtt.probe_timeout(self._max_ack_delay) * (1 << upload.timeouts)
            upload.rto_deadline = now + min(pto, rtt.max_rto)
            return
        # Probes unanswered too: RFC 6298 §5.4-5.6 retransmit everything outstanding,
        # back the timer off, and (RFC 5681 §3.1, RFC 9002 §7.6 persistent congestion)
        # restart from the loss window.
        freed = 0
        in_flight = upload.in_flight
        acked = upload.acked
        last_packet = upload.last_packet
        sent_segment = upload.sent_segment
        for packet_number in upload.queue:
            segment = sent_segment[packet_number]
            if in_flight[segment] and not acked[segment] and last_packet[segment] == packet_number:
                in_flight[segment] = 0
                freed += 1
                upload.retransmit.append(segment)
        upload.queue.clear()
        flow.in_flight -= freed
        # RFC 9002 §7.6: only when nothing at all got through for that long is the
        # congestion persistent; a single chunk stuck on its own losses is not.
        if now - flow.last_ack_time >= rtt.rto:
            flow.cc.on_timeout()
            flow.undo_cwnd = None
            flow.recovery_start = now
            self.counters.congestion_events += 1
        rtt.backoff = min(rtt.backoff * 2, 64)
        upload.rto_deadline = None

    def _send_probe(self, upload: _Upload, now: float) -> None:
        """Send the oldest outstanding segment again under a new packet number."""
        queue = upload.queue
        sent_segment = upload.sent_segment
        acked = upload.acked
        last_packet = upload.last_packet
        while queue:
            segment = sent_segment[queue[0]]
            if acked[segment] or last_packet[segment] != queue[0]:
                queue.popleft()
                continue
            break
        else:
            return
        # The earlier transmission is superseded (its queue entry turns stale); the
        # segment stays counted once in flight.
        packet_number = len(sent_segment)
        self._queue_control(self._data_datagram(upload, segment, packet_number, now), upload.peer)
        sent_segment.append(segment)
        upload.sent_time.append(now)
        last_packet[segment] = packet_number
        queue.append(packet_number)
        self.counters.probes_sent += 1
        self.counters.data_packets_sent += 1
        self.counters.data_packets_retransmitted += 1

    def _data_datagram(
        self, upload: _Upload, segment: int, packet_number: int, now: float
    ) -> bytes:
        data = upload.data
        assert data is not None
        offset = segment * upload.segment_size
        header = DATA_HEADER.pack(
            MAGIC,
            PROTOCOL_VERSION,
            _DATA_CODE,
            upload.request_id,
            packet_number,
            segment,
            int(now * 1_000_000) & _U32_MASK,
        )
        return header + data[offset : offset + upload.segment_size]

    def _send_flow(self, flow: _Flow, now: float, out: list[tuple[bytes, Address]]) -> None:
        cc = flow.cc
        room = int(cc.cwnd) - flow.in_flight
        if room <= 0:
            flow.pacing_wait_until = None
            return
        burst = self.config.pacing_burst_packets
        srtt = flow.rtt.srtt
        if srtt is None:
            tokens = float(burst)
            rate = 0.0
        else:
            gain = (
                self.config.pacing_gain_slow_start if cc.in_slow_start else self.config.pacing_gain
            )
            rate = gain * cc.cwnd / max(srtt, 1e-6)
            # A burst is what the pacing rate allows in ``pacing_burst_seconds`` (as
            # Linux sizes TSO bursts to ~1 ms of the pacing rate): a slow flow's burst
            # would otherwise queue up behind itself at the bottleneck, show as delay
            # and end a delay-based slow start early (or stand in front of others).
            rate_burst = rate * self.config.pacing_burst_seconds
            if rate_burst < burst:
                burst = max(_MIN_BURST, int(rate_burst))
            tokens = flow.tokens + (now - flow.last_refill) * rate
            if tokens > burst:
                tokens = float(burst)
        flow.last_refill = now
        budget = min(room, int(tokens))
        # Oldest chunk first: a chunk finishes as soon as it can, and its packets stay
        # dense enough for packet-threshold loss detection.
        sent = 0
        for upload in list(flow.uploads):
            if sent >= budget:
                break
            sent += self._send_upload(upload, budget - sent, now, out)
        flow.in_flight += sent
        recent_sent = flow.recent_sent + sent
        if recent_sent > _LOSS_MEMORY:
            recent_sent /= 2
            flow.recent_lost /= 2
        flow.recent_sent = recent_sent
        flow.tokens = tokens - sent
        if rate and sent == budget and budget < room:
            # Paced: come back when the next packet's token has accrued.
            # (At least a microsecond later, so float rounding cannot make it "now".)
            flow.pacing_wait_until = now + max((1.0 - flow.tokens) / rate, 1e-6)
        else:
            flow.pacing_wait_until = None

    def _send_upload(
        self, upload: _Upload, budget: int, now: float, out: list[tuple[bytes, Address]]
    ) -> int:
        data = upload.data
        flow = upload.flow
        assert data is not None and flow is not None
        timestamp_us = int(now * 1_000_000) & _U32_MASK
        pack = DATA_HEADER.pack
        peer = upload.peer
        request_id = upload.request_id
        segment_size = upload.segment_size
        acked = upload.acked
        in_flight = upload.in_flight
        last_packet = upload.last_packet
        sent_segment = upload.sent_segment
        sent_time = upload.sent_time
        queue = upload.queue
        retransmit = upload.retransmit
        limit = min(upload.segment_count, upload.cumulative + upload.peer_window)
        packet_number = len(sent_segment)
        first_packet = packet_number
        retransmitted = 0
        payload_bytes = 0
        while packet_number - first_packet < budget:
            if retransmit:
                segment = retransmit.popleft()
                if acked[segment] or in_flight[segment]:
                    continue
                retransmitted += 1
            elif upload.next_new < limit:
                segment = upload.next_new
                upload.next_new = segment + 1
            else:
                break
            offset = segment * segment_size
            payload = data[offset : offset + segment_size]
            out.append(
                (
                    pack(
                        MAGIC,
                        PROTOCOL_VERSION,
                        _DATA_CODE,
                        request_id,
                        packet_number,
                        segment,
                        timestamp_us,
                    )
                    + payload,
                    peer,
                )
            )
            payload_bytes += len(payload)
            sent_segment.append(segment)
            sent_time.append(now)
            last_packet[segment] = packet_number
            in_flight[segment] = 1
            queue.append(packet_number)
            packet_number += 1
        sent = packet_number - first_packet
        if sent:
            counters = self.counters
            counters.data_packets_sent += sent
            counters.data_packets_retransmitted += retransmitted
            counters.payload_bytes_sent += payload_bytes
            if upload.rto_deadline is None:
                upload.rto_deadline = now + flow.rtt.probe_timeout(self.config.max_ack_delay)
            if packet_number > self.config.max_transmissions_factor * upload.segment_count + 64:
                # The path loses nearly everything: give up rather than grow without bound.
                # (Forgetting the upload takes all its packets, these too, off the flight.)
                self._end_upload_silent(upload)
        return sent

    def _move_upload(self, upload: _Upload, event: SendInput) -> None:
        state = next_send_state(upload.state, event)
        if state is None:
            raise LocalProtocolError(f"send {upload.state.value}: no move on {event.value}")
        upload.state = state

    def _end_upload_silent(self, upload: _Upload) -> None:
        self.counters.transfers_timed_out += 1
        self._events.append(
            TransferTimedOut(
                upload.peer, upload.request_id, upload.content_id, upload.chunk_index, Role.SENDER
            )
        )
        self._move_upload(upload, SendInput.PEER_SILENT)
        self._forget_upload(upload)

    def _forget_upload(self, upload: _Upload, reason: RefusalReason | None = None) -> None:
        key = (upload.peer, upload.request_id)
        del self._uploads[key]
        self._pass_on_liveness(upload.peer, upload.last_heard)
        remaining = self._uploads_per_peer[upload.peer] - 1
        if remaining:
            self._uploads_per_peer[upload.peer] = remaining
        else:
            del self._uploads_per_peer[upload.peer]
        ip = upload.peer[0]
        remaining = self._uploads_per_ip[ip] - 1
        if remaining:
            self._uploads_per_ip[ip] = remaining
        else:
            del self._uploads_per_ip[ip]
        flow = upload.flow
        if flow is not None:
            if upload.state is SendState.DELIVERED and flow.packet_threshold > _PACKET_THRESHOLD:
                # Reordering seen once is forgotten slowly, one step per chunk delivered.
                flow.packet_threshold -= 1
            flow.in_flight -= sum(upload.in_flight)
            flow.uploads.remove(upload)
            if not flow.uploads:
                self._sending_flows.pop(flow.key, None)
                flow.pacing_wait_until = None
                self._forget_idle_flows()
        upload.data = None
        self._remember(
            self._finished_uploads,
            key,
            _Finished(upload.peer, upload.state, 0, upload.last_heard, reason),
        )

    def _pass_on_liveness(self, peer: Address, last_heard: float) -> None:
        """A finished transfer hands its last sign of life to the peer's downloads, which
        may have waited their turn without hearing anything themselves. (Uploads judge
        their peer by the ACKs of their flow: ``_upload_heard``.)"""
        if self._downloads_per_peer.get(peer):
            for download in self._downloads.values():
                if download.peer == peer and download.last_heard < last_heard:
                    download.last_heard = last_heard

    def _forget_idle_flows(self) -> None:
        excess = len(self._flows) - len(self._sending_flows) - self.config.max_idle_flows
        if excess <= 0:
            return
        for key in [k for k in self._flows if k not in self._sending_flows][:excess]:
            del self._flows[key]

    # ----------------------------------------------------------------------------------

    def _reply_unvalidated(self, datagram: bytes, addr: Address, now: float) -> bool:
        """Queue a reply to an address that has not proven it receives there, within the
        total ``unvalidated_reply_rate``; False (counted) when over it."""
        if not self._unvalidated_replies.take(1, now):
            self.counters.unvalidated_replies_dropped += 1
            return False
        self._queue_control(datagram, addr)
        return True

    def _queue_control(self, datagram: bytes, addr: Address) -> None:
        if len(self._control) >= self.config.max_control_queue:
            self.counters.control_queue_overflow += 1
            return
        self._control.append((datagram, addr))

    def _remember(self, table: OrderedDict[_K, _Finished], key: _K, finished: _Finished) -> None:
        table[key] = finished
        table.move_to_end(key)
        while len(table) > self.config.recent_requests:
            table.popitem(last=False)
