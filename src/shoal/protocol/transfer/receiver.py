"""The receiver: chunks this engine asked for, from request to verified bytes.

Theory of operation
-------------------
``request_chunk`` sends CHUNK_REQUEST, repeated on an RFC 6298 timer (from measured
answer latency) until answered, and at once when a later request to the same peer is
answered first (peers serve in order: the earlier one was lost). A request carries the
token the sender gave us in a RETRY (RFC 9000 §8.1.2-3), kept per sender; until a peer
has answered once, requests to it are sent at a bounded rate (``unproven_request_sends``),
since an unproven address may be a victim rather than a shoal port.

DATA segments are copied once, by slice assignment, into a buffer of the chunk's length
allocated on the first segment. The receiver acknowledges every ``ack_every_packets``
packets, after ``max_ack_delay`` at the latest, at once when a new gap appears (so
the sender learns of a loss within a round trip), and at once for the first DATA from a
sender we have not received from yet: its flow's first flight (ten packets) would
otherwise draw a single delayed ACK, and with it lost the sender, which has no RTT
sample yet, waits its probe timeout: 0.3 s (``initial_rtt``) on a LAN whose round trip
is a millisecond (Linux's quick ACKs at a connection's start serve the same end). An
ACK carries the cumulative segment count, up to ``max_ack_ranges`` ranges above it, the
largest packet number seen (for RTT), and the least one-way delay since the last ACK
(for LEDBAT). The last segment triggers a SHA-256 check: ``ChunkReceived`` (which hands
the buffer over, uncopied: the download forgets it as it ends, so nothing arriving later
writes into it) or ``ChunkCorrupted`` naming the peer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TypeVar

from shoal.core.digest import sha256
from shoal.core.ids import ContentId
from shoal.protocol.transfer.congestion import RttEstimator
from shoal.protocol.transfer.context import EngineContext, Finished
from shoal.protocol.transfer.download import Download
from shoal.protocol.transfer.events import (
    Address,
    ChunkCorrupted,
    ChunkReceived,
    ChunkRefused,
    ChunkStarted,
    Role,
    TransferTimedOut,
    VersionRejected,
)
from shoal.protocol.transfer.states import (
    LocalProtocolError,
    ReceiveInput,
    ReceiveState,
    TooManyDownloads,
    next_receive_state,
)
from shoal.protocol.transfer.strays import Strays
from shoal.protocol.transfer.timers import TimerKind
from shoal.protocol.validation import SourceLimiter
from shoal.wire.messages import (
    DATA_HEADER_SIZE,
    DATA_PREFIX_WORD,
    DATA_WORDS,
    NO_TOKEN,
    PROTOCOL_VERSION,
    RESUME_VERSION,
    Cancel,
    ChunkRequest,
    Mode,
    Refusal,
    RefusalReason,
    Retry,
    VersionError,
    encode_ack,
    encode_datagram,
)

_U32_MASK = 0xFFFFFFFF
_HALF_U32 = 1 << 31
_V = TypeVar("_V")


def _remember(table: OrderedDict[Address, _V], peer: Address, value: _V, limit: int) -> None:
    """Note ``peer`` in a per-peer table, most recent last, forgetting the oldest beyond
    ``limit``."""
    table[peer] = value
    table.move_to_end(peer)
    while len(table) > limit:
        table.popitem(last=False)


#: Where the receiver hands a datagram that is not DATA of our version.
Other = Callable[[bytes | memoryview, Address, float], None]


class Receiver:
    """Every chunk this engine is receiving (see the module docstring)."""

    def __init__(self, context: EngineContext, now: float) -> None:
        self._context = context
        config = context.config
        self._config = config
        self.downloads: dict[int, Download] = {}
        self._strays = Strays(context)
        self._finished = self._strays.finished
        #: Answers a datagram about a request not (any more) being received.
        self.on_stray = self._strays.answer
        #: Downloads whose ACK goes out with the next ``datagrams_to_send`` (read by the
        #: engine, which calls ``flush_acks`` only when there are some).
        self.acks_due: dict[int, Download] = {}
        #: Tokens senders gave us for our address (RETRY), by sender address: a peer
        #: with one has answered us, so it is a live shoal port, not a victim.
        self._peer_tokens: OrderedDict[Address, bytes] = OrderedDict()
        self._unproven_sends = SourceLimiter(
            # Refilled slower than a silent download times out (idle_timeout): the
            # agent drops a peer that never answered before it could be asked again.
            config.unproven_request_sends / (2 * config.idle_timeout),
            config.unproven_request_sends,
            config.max_tracked_sources,
        )
        # How long peers take to answer a request with data (for request repeats).
        self._answer_time = RttEstimator(config.initial_rtt, config.min_rto, config.max_rto)
        #: Peers that answered a resumed chunk's request (version 3) with VERSION_ERROR
        #: naming version 2: asked for whole chunks only (bounded like the tokens).
        self._whole_only: OrderedDict[Address, None] = OrderedDict()
        #: Senders we have received DATA from (bounded like the tokens): their flows to
        #: us have an RTT sample, so their chunks' first DATA waits its delayed ACK.
        self._data_from: OrderedDict[Address, None] = OrderedDict()
        self._segment_size = config.segment_size
        self._counters = context.counters  # (the hot path's, one lookup fewer per datagram)
        self._timers = context.timers
        self._ack_every = config.ack_every_packets
        self._max_ack_delay = config.max_ack_delay
        # Derived from the clock, so a restarted process does not reuse the IDs that
        # its peers still remember as finished (they would ignore the new requests).
        self._next_request_id = (int(now * 1_000_000) & _U32_MASK) or 1

    # -- user calls ------------------------------------------------------------------

    def request_chunk(
        self,
        peer: Address,
        content_id: ContentId,
        chunk_index: int,
        chunk_length: int,
        chunk_hash: bytes,
        mode: Mode,
        now: float,
        prefix: bytes = b"",
    ) -> int:
        """See ``TransferEngine.request_chunk``."""
        config = self._config
        if len(self.downloads) >= config.max_downloads:
            raise TooManyDownloads(
                f"already receiving {len(self.downloads)} chunks "
                f"(max_downloads = {config.max_downloads})"
            )
        if not 0 < chunk_length <= config.max_chunk_length:
            raise LocalProtocolError(f"chunk length {chunk_length} out of range")
        if len(chunk_hash) != 32:
            raise LocalProtocolError("chunk_hash must be a 32-byte SHA-256 digest")
        if len(prefix) >= chunk_length:
            raise LocalProtocolError(f"a prefix of {len(prefix)} bytes leaves nothing to ask")
        if prefix and peer in self._whole_only:  # it answered VERSION_ERROR to one
            prefix = b""
        request_id = self._next_request_id
        self._next_request_id = (request_id + 1) & _U32_MASK or 1
        download = Download(
            request_id,
            peer,
            content_id,
            chunk_index,
            chunk_length,
            chunk_hash,
            Mode(mode),
            self._segment_size,
            now,
            self._context.next_order(),
            prefix,
        )
        self.downloads[request_id] = download
        self._context.peers.add_download(download)
        self._send_request(download, now)
        return request_id

    def cancel(self, request_id: int) -> bytes:
        """See ``TransferEngine.cancel``."""
        download = self.downloads.get(request_id)
        if download is None:
            return b""
        if download.peer in self._peer_tokens:  # nothing to tell a peer that never answered
            self._context.queue_control(encode_datagram(Cancel(request_id)), download.peer)
        prefix = download.held_prefix()
        self._end_download(download, ReceiveInput.USER_CANCELLED)
        return prefix

    def has_answered(self, peer: Address) -> bool:
        """See ``TransferEngine.has_answered``."""
        return peer in self._peer_tokens

    # -- DATA (the hot path) ---------------------------------------------------------

    def on_datagrams(
        self, datagrams: Iterable[tuple[bytes | memoryview, Address]], now: float, other: Other
    ) -> None:
        """Take each DATA datagram of our version in ``datagrams`` (all received at
        ``now``); hand any other to ``other`` (the engine's decoder), in order.

        The hot path, inlined on purpose and run once per batch a wake-up read (a GRO
        buffer's segments, several buffers): per datagram one unpack (the DATA header's
        layout, ``wire.DATA_WORDS``), one dict lookup and one copy of the payload into
        the chunk's buffer; the clock's microseconds, the bound methods and the counters
        once per batch.
        """
        unpack_header = DATA_WORDS.unpack_from
        find_download = self.downloads.get
        acks_due = self.acks_due
        ack_every = self._ack_every
        now_us = int(now * 1_000_000)
        payload_bytes = 0
        duplicates = 0
        try:
            for data, addr in datagrams:
                payload_length = len(data) - DATA_HEADER_SIZE
                if payload_length <= 0:
                    other(data, addr, now)
                    continue
                prefix, request_id, packet_number, segment_index, timestamp_us = unpack_header(data)
                if prefix != DATA_PREFIX_WORD:
                    other(data, addr, now)
                    continue
                download = find_download(request_id)
                if download is None or download.peer != addr:
                    self.on_stray(request_id, addr, now, data_packet=(packet_number, timestamp_us))
                    continue
                if segment_index >= download.segment_count or payload_length != (
                    download.segment_size
                    if segment_index != download.last_segment
                    else download.last_length
                ):
                    self._counters.data_outside_chunk += 1
                    continue
                download.last_heard = now
                buffer = download.buffer
                quick_ack = False
                if buffer is None:
                    quick_ack = addr not in self._data_from
                    buffer = self._start(download, now)
                if packet_number > download.largest_packet_number:
                    download.largest_packet_number = packet_number
                    download.largest_time = now
                    download.largest_timestamp_us = timestamp_us
                # The delay sample an ACK carries is the least over the packets it
                # covers: the first packet of a paced burst, not its tail, which waited
                # behind the burst itself (RFC 6817 §3.4.2 filters delays with a minimum
                # for the same reason).
                delay_us = (now_us - timestamp_us) & _U32_MASK
                least = download.least_delay_us
                if least < 0 or (delay_us - least) & _U32_MASK > _HALF_U32:
                    download.least_delay_us = delay_us
                received = download.received
                ack_at_once = quick_ack
                if received[segment_index]:
                    duplicates += 1
                else:
                    offset = segment_index * download.segment_size
                    buffer[offset : offset + payload_length] = data[DATA_HEADER_SIZE:]
                    received[segment_index] = 1
                    download.received_count += 1
                    payload_bytes += payload_length
                    if segment_index == download.cumulative:
                        cumulative = received.find(0, segment_index + 1)
                        download.cumulative = (
                            download.segment_count if cumulative < 0 else cumulative
                        )
                    elif segment_index > download.highest_segment + 1:
                        # A new gap: tell the sender now (RFC 9000 §13.2.1 acks
                        # out-of-order at once).
                        ack_at_once = True
                    if segment_index > download.highest_segment:
                        download.highest_segment = segment_index
                    if download.received_count == download.segment_count:
                        self._complete(download, now)
                        continue
                download.unacked += 1
                if ack_at_once or download.unacked >= ack_every:
                    acks_due[request_id] = download
                elif download.ack_deadline is None:
                    download.ack_deadline = deadline = now + self._max_ack_delay
                    self._timers.push(deadline, TimerKind.ACK, download)
        finally:
            counters = self._counters
            counters.payload_bytes_received += payload_bytes
            counters.duplicate_data += duplicates

    def _start(self, download: Download, now: float) -> bytearray | memoryview:
        """A download's first DATA: its buffer, its answer time, overtaken requests."""
        self._move(download, ReceiveInput.DATA_ARRIVED)
        _remember(self._data_from, download.peer, None, self._config.max_peer_tokens)
        buffer = download.start_buffer()
        if download.requests_sent == 1:
            # Karn (RFC 6298 §3): time only requests that were sent once.
            self._answer_time.on_sample(now - download.requested_at)
        self._repeat_overtaken_requests(download, now)
        self._context.events.append(
            ChunkStarted(
                download.peer, download.request_id, download.content_id, download.chunk_index
            )
        )
        return buffer

    def flush_acks(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        """Append the ACKs due now to ``out``."""
        acks_due = self.acks_due
        for download in acks_due.values():
            out.append((self._build_ack(download, now), download.peer))
        acks_due.clear()

    def _build_ack(self, download: Download, now: float) -> bytes:
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
        range_bounds: list[int] = []
        position = download.cumulative
        limit = 2 * self._config.max_ack_ranges
        while position < count and len(range_bounds) < limit:
            start = received.find(1, position)
            if start < 0:
                break
            end = received.find(0, start)
            if end < 0:
                end = count
            range_bounds.append(start)
            range_bounds.append(end)
            position = end
        self._context.counters.acks_sent += 1
        return encode_ack(
            download.request_id,
            max(download.largest_packet_number, 0),
            min(int((now - download.largest_time) * 1_000_000), _U32_MASK),
            # RFC 6817 §3.3: one-way delay from the sender's stamps, the least since the
            # last ACK (the newest packet's when every packet since was a duplicate).
            delay_us,
            download.cumulative,
            self._config.receive_window_packets,
            range_bounds,
        )

    def _complete(self, download: Download, now: float) -> None:
        buffer = download.whole  # a resumed chunk's too: the prefix is checked with it
        assert buffer is not None
        context = self._context
        # The final ACK goes out at once, twice: the sender can free the chunk, and
        # if both copies are lost it learns only from a timeout.
        final_ack = self._build_ack(download, now)
        context.queue_control(final_ack, download.peer)
        context.queue_control(final_ack, download.peer)
        self.acks_due.pop(download.request_id, None)
        if sha256(buffer) == download.chunk_hash:  # not hashlib: see shoal.core.digest
            context.counters.chunks_received += 1
            context.events.append(
                ChunkReceived(
                    download.peer,
                    download.request_id,
                    download.content_id,
                    download.chunk_index,
                    # Handed over, not copied. A chunk-sized copy, freed with the buffer
                    # once written, let glibc trim its heap after every chunk and fault
                    # fresh pages in for the next: ~430,000 minor faults per GB received
                    # at 100 Mbit/s against ~65,000 (benchmarks/transfer_wakeups.py).
                    buffer,
                )
            )
            self._end_download(download, ReceiveInput.CHUNK_VERIFIED, emit=False)
        else:
            context.counters.chunks_corrupted += 1
            self._end_download(download, ReceiveInput.CHUNK_MISMATCHED)

    # -- requests ------------------------------------------------------------------

    def _repeat_overtaken_requests(self, answered: Download, now: float) -> None:
        """Repeat at once requests to the same peer sent before ``answered`` and still
        unanswered: peers serve requests in order, so these were most likely lost (the
        packet-threshold idea of RFC 9002 §6.1.1, applied to requests)."""
        same_peer = self._context.peers.downloads_of(answered.peer)
        if len(same_peer) < 2:
            return
        for download in same_peer.values():
            if (
                download.state is ReceiveState.REQUESTED
                and download.requests_sent == 1
                and (
                    download.requested_at < answered.requested_at
                    or (
                        download.requested_at == answered.requested_at
                        and download.request_id < answered.request_id
                    )
                )
            ):
                self._context.queue_control(self._request_datagram(download), download.peer)
                download.requests_sent += 1

    def _request_datagram(self, download: Download) -> bytes:
        """The request, with the token its sender gave us (re-encoded when it changes)."""
        token = self._peer_tokens.get(download.peer, NO_TOKEN)
        if token != download.token_sent or not download.request_datagram:
            download.token_sent = token
            download.request_datagram = encode_datagram(
                ChunkRequest(
                    request_id=download.request_id,
                    content_id=download.content_id,
                    chunk_index=download.chunk_index,
                    chunk_length=download.whole_length,
                    mode=download.mode,
                    segment_size=download.segment_size,
                    receive_window=self._config.receive_window_packets,
                    token=token,
                    offset=download.base,  # not 0: a resumed chunk, version 3
                )
            )
        return download.request_datagram

    def on_retry(self, retry: Retry, addr: Address, now: float) -> None:
        """The sender wants proof that we receive at our address: ask again with its
        token, and keep the token for every later request to it (RFC 9000 §8.1.2-3)."""
        download = self.downloads.get(retry.request_id)
        counters = self._context.counters
        if (
            download is None
            or download.peer != addr
            or download.state is not ReceiveState.REQUESTED
            or retry.token in (NO_TOKEN, download.token_sent)
        ):
            counters.retries_ignored += 1
            return
        counters.retries_received += 1
        _remember(self._peer_tokens, addr, retry.token, self._config.max_peer_tokens)
        # Every unanswered request to that sender goes again now, with the token: each
        # was (or will be) answered by a RETRY too. Timing restarts (Karn, RFC 6298 §3).
        for waiting in list(self._context.peers.downloads_of(addr).values()):
            if waiting.state is ReceiveState.REQUESTED and waiting.token_sent != retry.token:
                waiting.requests_sent = 0
                waiting.retry_interval = 0.0
                waiting.requested_at = now
                self._send_request(waiting, now)

    def _send_request(self, download: Download, now: float) -> None:
        peer = download.peer
        if (
            peer in self._peer_tokens
            or self._context.proven_peer(peer[0], now)
            or self._unproven_sends.admit(peer[0], now)
        ):
            self._context.queue_control(self._request_datagram(download), peer)
            download.requests_sent += 1
        else:
            self._context.counters.requests_held += 1
        # Repeat the request on an RFC 6298 timer, computed from how long requests
        # take to be answered, doubling (§5.5) until answered. A repeat the peer
        # did not need costs it one ignored datagram.
        interval = download.retry_interval
        interval = self._answer_time.rto if not interval else interval * 2
        download.retry_interval = min(interval, self._config.max_rto)
        download.retry_at = deadline = now + download.retry_interval
        self._context.timers.push(deadline, TimerKind.REQUEST_RETRY, download)

    # -- timers ----------------------------------------------------------------------

    def on_timer(self, download: Download, peer_silent: bool, now: float) -> None:
        """Fire what is due of ``download``: its end if its peer fell silent, else its
        ACK and its request repeat."""
        if peer_silent:
            if download.peer in self._peer_tokens:
                self._context.queue_control(
                    encode_datagram(Cancel(download.request_id)), download.peer
                )
            self._end_download(download, ReceiveInput.PEER_SILENT)
            return
        if download.ack_deadline is not None and download.ack_deadline <= now:
            self.acks_due[download.request_id] = download
        if download.state is ReceiveState.REQUESTED and download.retry_at <= now:
            self._send_request(download, now)

    def timer_is_live(self, kind: TimerKind, download: Download, deadline: float) -> bool:
        """Is ``deadline`` still what ``download`` waits for under ``kind``?"""
        if self.downloads.get(download.request_id) is not download:
            return False
        if kind is TimerKind.ACK:
            return download.ack_deadline == deadline
        return download.state is ReceiveState.REQUESTED and download.retry_at == deadline

    # -- ends ------------------------------------------------------------------------

    def _move(self, download: Download, event: ReceiveInput) -> None:
        state = next_receive_state(download.state, event)
        if state is None:
            raise LocalProtocolError(f"receive {download.state.value}: no move on {event.value}")
        download.state = state

    def _end_download(self, download: Download, event: ReceiveInput, *, emit: bool = True) -> None:
        """Move a download to its terminal state, report it, and forget its buffers."""
        self._move(download, event)
        request_id, peer = download.request_id, download.peer
        context = self._context
        if emit:
            if event is ReceiveInput.CHUNK_MISMATCHED:
                context.events.append(
                    ChunkCorrupted(
                        peer,
                        request_id,
                        download.content_id,
                        download.chunk_index,
                        bool(download.base),
                    )
                )
            elif event is ReceiveInput.PEER_SILENT:
                context.counters.transfers_timed_out += 1
                context.events.append(
                    TransferTimedOut(
                        peer,
                        request_id,
                        download.content_id,
                        download.chunk_index,
                        Role.RECEIVER,
                        download.held_prefix(),
                    )
                )
        del self.downloads[request_id]
        self.acks_due.pop(request_id, None)
        context.peers.remove_download(download)
        context.peers.pass_on_liveness(peer, download.last_heard)
        download.buffer = download.whole = None
        self._finished.remember(
            request_id,
            Finished(peer, download.state, download.segment_count, download.last_heard),
        )

    def _refuse(self, download: Download, reason: RefusalReason) -> None:
        self._context.events.append(
            ChunkRefused(
                download.peer,
                download.request_id,
                download.content_id,
                download.chunk_index,
                reason,
                download.held_prefix(),
            )
        )
        self._end_download(download, ReceiveInput.REFUSAL_ARRIVED)

    def on_refusal(self, message: Refusal, addr: Address, now: float) -> None:
        download = self.downloads.get(message.request_id)
        if download is None or download.peer != addr:
            self.on_stray(message.request_id, addr, now, data_packet=None)
            return
        self._refuse(download, message.reason)

    def on_version_error(self, message: VersionError, addr: Address) -> None:
        context = self._context
        context.counters.version_errors_received += 1
        if not context.peers.knows(addr):
            context.counters.unknown_sender += 1
            return
        # Only requests not yet answered end: a peer already sending us data of our
        # version evidently speaks it (and a forged version error must not end it).
        unanswered = [d for d in context.peers.downloads_of(addr).values() if d.buffer is None]
        if message.min_version <= PROTOCOL_VERSION <= message.max_version < RESUME_VERSION:
            # It reads version 2, not a resumed chunk's request: those end (their
            # prefixes handed back), and it is asked for whole chunks from now on.
            _remember(self._whole_only, addr, None, self._config.max_peer_tokens)
            unanswered = [d for d in unanswered if d.base]
        else:
            context.events.append(VersionRejected(addr, message.min_version, message.max_version))
        for download in unanswered:
            self._refuse(download, RefusalReason.UNSUPPORTED_VERSION)
