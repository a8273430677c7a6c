"""The transfer engine: reliable, congestion-controlled chunk transfer over datagrams.

Theory of operation
-------------------
One ``TransferEngine`` serves one local UDP socket: it receives chunks it asked for and
sends chunks peers asked for, to and from many peers at once. It never touches a socket
or a clock: the shell hands it datagrams (``receive_datagram``) and timer expiries
(``handle_timer``), and collects what to send (``datagrams_to_send``), when to wake it
(``get_timer``) and what happened (``next_event``) -- the aioquic model.

This module only coordinates; each concept is its own module, as aioquic splits its
connection:

=============  ======================================================================
module         job
=============  ======================================================================
``receiver``   chunks we asked for: requests and their repeats, DATA into the buffer,
               ACKs, the hash check (``Download`` records in ``download``)
``sender``     chunks peers asked for: address validation, requests to uploads,
               sending each flow's data (``Upload`` records in ``upload``)
``recovery``   the sender's ACK processing, loss detection, probes and timeouts
               (RFC 9002 §5-7, RFC 6298)
``flow``       congestion state per (peer, mode): controller, RTT, in flight, loss rate
``pacer``      how much a flow may send now, and when again
``congestion``  the controllers (DelayReno, LEDBAT) and the RTT estimator
``timers``     every deadline in one heap, deleted lazily
``context``    what all of them share: counters, events, control queue, peers
``states``     the transfer's life as transition tables
``wire``       every datagram's bytes (``encode_data``/``encode_ack`` on the hot path)
=============  ======================================================================

*Timers.* Each deadline is pushed on one heap when armed (``timers``); ``get_timer``
looks at the top, dropping entries whose transfer ended or whose deadline moved, and
``handle_timer`` pops what is due and fires it, transfers in the order they began, so
no wake-up scans every transfer. A peer's silence (no transfer with it, either way,
heard from it for ``idle_timeout``) is one timer per peer, moved on lazily.

*Bounds.* Downloads, uploads (in total and per source IP), idle flows, remembered
request IDs, remembered tokens, queued control datagrams, transmissions per chunk, and
chunk requests per second per source IP are all capped by ``TransferConfig``;
whatever a peer sends beyond them is refused or dropped, and counted in
``TransferCounters``. Every reply an unvalidated address can provoke (RETRY,
VERSION_ERROR, CANCEL of stray data, a repeated final ACK) is one datagram smaller than
3x the one it answers, under a total rate (``unvalidated_reply_rate``, RFC 9000 §8.1).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Sequence
from typing import Any

from shoal.core.ids import ContentId
from shoal.protocol.transfer.config import TransferConfig
from shoal.protocol.transfer.context import EngineContext
from shoal.protocol.transfer.counters import TransferCounters
from shoal.protocol.transfer.download import Download
from shoal.protocol.transfer.events import (
    Address,
    ChunkCorrupted,
    ChunkDelivered,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    ChunkStarted,
    Event,
    PeerPortClosed,
    RequestCancelled,
    Role,
    TransferTimedOut,
    VersionRejected,
)
from shoal.protocol.transfer.receiver import Receiver
from shoal.protocol.transfer.sender import Sender
from shoal.protocol.transfer.states import LocalProtocolError, TooManyDownloads
from shoal.protocol.transfer.timers import TimerKind
from shoal.protocol.transfer.upload import Upload
from shoal.wire.decoding import VERSION_ERROR_REPLY, Undecodable, decode_counted
from shoal.wire.messages import (
    Ack,
    Cancel,
    ChunkRequest,
    Data,
    Have,
    Mode,
    Refusal,
    RefusalReason,
    Retry,
    VersionError,
    WhoHas,
    decode_datagram,
)

# The engine's public names, importable from here as they always were.
__all__ = [
    "Address",
    "ChunkCorrupted",
    "ChunkDelivered",
    "ChunkReceived",
    "ChunkRefused",
    "ChunkRequested",
    "ChunkStarted",
    "Event",
    "LocalProtocolError",
    "Mode",
    "PeerPortClosed",
    "RefusalReason",
    "RequestCancelled",
    "Role",
    "TooManyDownloads",
    "TransferConfig",
    "TransferCounters",
    "TransferEngine",
    "TransferTimedOut",
    "VersionRejected",
]

#: Stale timer entries tolerated per armed one before the heap is compacted.
_STALE_TIMERS_PER_LIVE = 8
#: A heap this small is never compacted.
_COMPACT_FLOOR = 64


class TransferEngine:
    """Sans-I/O chunk transfer for one local UDP socket (see the module docstring)."""

    def __init__(
        self, *, config: TransferConfig | None = None, now: float, token_key: bytes | None = None
    ) -> None:
        self.config = config or TransferConfig()
        self._context = EngineContext(self.config, now)
        self.counters = self._context.counters
        self._receiver = Receiver(self._context, now)
        self._sender = Sender(self._context, token_key)
        # Bound once: the calls below run for every batch and every look at the heap.
        self._take_datagrams = self._receiver.on_datagrams
        self._download_timer_is_live = self._receiver.timer_is_live
        self._upload_timer_is_live = self._sender.timer_is_live
        self._idle_is_live = self._context.peers.idle_is_live

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
        prefix: bytes = b"",
    ) -> int:
        """Ask ``peer`` for a chunk; return the request ID its events will carry.

        With ``prefix`` (the chunk's first bytes, held by an earlier request that ended:
        ``TransferTimedOut.prefix``, ``ChunkRefused.prefix``, ``cancel``'s answer) only the
        rest is asked, from its last whole segment on (a peer that answered such a request
        with VERSION_ERROR is asked the whole chunk). The chunk, prefix included, is
        checked against ``chunk_hash`` (SHA-256) once complete; a resumed chunk that fails
        is ``ChunkCorrupted.resumed``. Raises ``TooManyDownloads`` beyond
        ``config.max_downloads`` at once.
        """
        return self._receiver.request_chunk(
            peer, content_id, chunk_index, chunk_length, chunk_hash, mode, now, prefix
        )

    def address_token(self, addr: Address, now: float) -> bytes:
        """The token this engine accepts in requests from ``addr`` (RFC 9000 §8.1)."""
        return self._sender.validator.token(addr, now)

    def cancel(self, request_id: int, now: float) -> bytes:
        """Stop receiving a chunk; the peer is told. Unknown or finished IDs are ignored.
        Returns the chunk's contiguous whole-segment prefix held (b"" for none), which a
        later ``request_chunk`` may resume from."""
        return self._receiver.cancel(request_id)

    def received_prefix(self, request_id: int) -> memoryview | None:
        """Read-only: the contiguous whole-segment prefix request ``request_id`` holds now
        (a view of its buffer, the prefix it was asked with included), or None (no DATA
        yet, whole, or no such request). For a client that keeps the prefix on disk as it
        grows; it costs a look-up, nothing per DATA datagram."""
        download = self._receiver.downloads.get(request_id)
        return None if download is None else download.received_prefix()

    def trust_peers(self, proven: Callable[[str, float], bool]) -> None:
        """Requests to a peer IP that ``proven(ip, now)`` says receives at its address
        (the application proved it: a discovery token it echoed, the P2P server's list)
        are not held to ``unproven_request_sends`` before its first RETRY: that limit
        keeps a forged HAVE from aiming us at a victim, and a proven peer is none. With
        it, one RETRY lost in a full queue held the client's requests to that peer for
        the limit's 5 s."""
        self._context.proven_peer = proven

    def has_answered(self, peer: Address) -> bool:
        """Has ``peer`` ever answered us (a RETRY with its token)? A peer that never did
        may be a forged address, not a shoal port."""
        return self._receiver.has_answered(peer)

    # ----------------------------------------------------------------------------------
    # Sender side: answers to ChunkRequested
    # ----------------------------------------------------------------------------------

    def send_chunk(
        self,
        peer: Address,
        request_id: int,
        data: bytes | memoryview,
        now: float,
        *,
        path_rate: float | None = None,
    ) -> None:
        """Serve a requested chunk. ``data`` is kept by reference until delivered.

        ``path_rate``: bytes a second the path to ``peer`` is known to carry for this
        flow (the server's share of an office's WAN, from its link profile): the flow's
        first slow start begins at that rate's window (``Flow.know_path``), and once
        the flow has had a loss episode it is paced at that rate at most
        (``Flow.rate_cap``); a higher rate than the flow was told before raises it
        (``raise_path_rate``).

        A request that ended meanwhile (cancelled, timed out) is silently ignored.
        """
        self._sender.send_chunk(peer, request_id, data, now, path_rate)

    def raise_path_rate(self, peer_ips: Collection[str], path_rate: float) -> None:
        """The paths to ``peer_ips`` carry ``path_rate`` bytes a second for each flow now
        (more than ``send_chunk`` said: other flows on the same link ended): every sending
        flow to them with a lower known rate is told (``Flow.know_path``)."""
        self._sender.raise_path_rate(peer_ips, path_rate)

    def abandon_peer(self, peer: Address) -> int:
        """End every upload to ``peer``: the network said nothing listens there any more.

        For an ICMP port unreachable (``ECONNREFUSED``; RFC 1122 §4.1.3.3 passes it up to
        UDP's user): the peer's process died or restarted, and a restarted one asks
        again under new request IDs. Without this, the flow keeps sending the dead
        requests (oldest first, ahead of the new ones) until probes and timeouts give
        up, and across a WAN that is the office's bandwidth wasted. Each upload ends as
        if the peer had cancelled it, and ``PeerPortClosed`` tells the application (a
        client ends its requests to it). Returns how many uploads ended.
        """
        return self._sender.abandon_peer(peer)

    def refuse_chunk(
        self, peer: Address, request_id: int, reason: RefusalReason, now: float
    ) -> None:
        """Decline a requested chunk; the peer gets ``ChunkRefused`` with ``reason``."""
        self._sender.refuse_chunk(peer, request_id, reason, now)

    def withdraw_chunk(
        self, peer: Address, request_id: int, reason: RefusalReason, now: float
    ) -> None:
        """Stop sending a chunk under way (``send_chunk`` was called); the peer gets
        ``ChunkRefused`` with ``reason``. One that ended meanwhile is ignored."""
        self._sender.withdraw_chunk(peer, request_id, reason, now)

    def refuse_uploads_to(
        self, peer_ip: str, content_ids: Container[ContentId], reason: RefusalReason, now: float
    ) -> int:
        """Refuse every upload to any port of ``peer_ip`` of a chunk of ``content_ids``,
        whether it awaits the application, waits behind other chunks or is under way
        (``refuse_chunk`` or ``withdraw_chunk`` on each): for a peer that must get no
        more of those chunks now (the P2P server's office banned it). Returns how many
        uploads ended."""
        return self._sender.refuse_uploads_to(peer_ip, content_ids, reason, now)

    # ----------------------------------------------------------------------------------
    # Driven by the shell
    # ----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        """Handle one received datagram. Never raises for anything a peer can send."""
        self.receive_datagrams(((data, addr),), now)

    def receive_datagrams(
        self, datagrams: Sequence[tuple[bytes | memoryview, Address]], now: float
    ) -> None:
        """Handle datagrams received together at ``now``, in order: what
        ``receive_datagram`` does for each, in one call (the shell's batch of a wake-up:
        the per-datagram work is then the receiver's loop alone). Never raises for
        anything a peer can send."""
        self.counters.datagrams_received += len(datagrams)
        self._take_datagrams(datagrams, now, self._receive_other)

    def _receive_other(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        counters = self.counters
        message = decode_counted(decode_datagram, data, counters)
        if message is Undecodable.UNSUPPORTED_VERSION:
            # Every message carries a version; an unsupported one gets an explicit answer.
            if self._context.reply_unvalidated(VERSION_ERROR_REPLY, addr, now):
                counters.version_errors_sent += 1
            return
        if isinstance(message, Undecodable):
            return
        if isinstance(message, Ack):
            self._sender.on_ack(message, addr, now)
        elif isinstance(message, ChunkRequest):
            self._sender.on_request(message, addr, now)
        elif isinstance(message, Refusal):
            self._receiver.on_refusal(message, addr, now)
        elif isinstance(message, Cancel):
            self._sender.on_cancel(message, addr)
        elif isinstance(message, VersionError):
            self._receiver.on_version_error(message, addr)
        elif isinstance(message, Retry):
            self._receiver.on_retry(message, addr, now)
        elif isinstance(message, Data):
            # Our version, but a DATA datagram the fast path did not take (too short).
            counters.malformed += 1
        elif isinstance(message, WhoHas | Have):
            counters.discovery_datagrams += 1

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``: acks, request retries, RTOs, idle timeouts."""
        timers = self._context.timers
        peers = self._context.peers
        silent: set[Address] = set()
        due_downloads: dict[int, Download] = {}
        due_uploads: dict[int, Upload] = {}
        popped: list[tuple[float, TimerKind, object]] = []
        while (top := timers.peek()) is not None and top[0] <= now:
            deadline, _, kind, target = timers.pop()
            if not self._timer_is_live(deadline, kind, target):
                continue
            if not popped and now - deadline > self.config.stall_threshold:
                # Woken this late: we did not run (config.stall_threshold).
                self.counters.stalled_wakeups += 1
                peers.credit_stall(now - deadline + self.config.stall_grace)
            popped.append((deadline, kind, target))
            if kind is TimerKind.PEER_IDLE:
                assert isinstance(target, tuple)
                if peers.settle_idle(target, deadline) is None:
                    continue  # heard from since: re-armed at its true deadline
                peers.disarm_idle(target)
                silent.add(target)
                for download in peers.downloads_of(target).values():
                    due_downloads[download.order] = download
                for upload in peers.uploads_of(target).values():
                    due_uploads[upload.order] = upload
            elif kind is TimerKind.ACK or kind is TimerKind.REQUEST_RETRY:
                assert isinstance(target, Download)
                due_downloads[target.order] = target
            elif kind is TimerKind.LOSS or kind is TimerKind.RTO:
                assert isinstance(target, Upload)
                due_uploads[target.order] = target
        # Fired in the order the transfers began (what one pass over them all would do).
        receiver, sender = self._receiver, self._sender
        for order in sorted(due_downloads):
            download = due_downloads[order]
            if receiver.downloads.get(download.request_id) is download:
                receiver.on_timer(download, download.peer in silent, now)
        for order in sorted(due_uploads):
            upload = due_uploads[order]
            if sender.uploads.get((upload.peer, upload.request_id)) is upload:
                sender.on_timer(upload, upload.peer in silent, now)
        # What is still armed at the same deadline (an ACK not sent yet, a pacing
        # wake-up) stays in the heap: get_timer keeps reporting it until it is done.
        for deadline, kind, target in popped:
            if kind is TimerKind.PEER_IDLE:
                assert isinstance(target, tuple)
                peers.arm_idle(target)
            elif self._timer_is_live(deadline, kind, target):
                timers.push(deadline, kind, target)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything to send now: control datagrams first, then paced data, grouped by peer."""
        context = self._context
        out = context.control
        context.control = []
        # (Most calls have neither: a receiver between ACKs, a host that only downloads.)
        if self._receiver.acks_due:
            self._receiver.flush_acks(now, out)
        if self._sender.sending_flows:
            self._sender.send_flows(now, out)
        self.counters.datagrams_sent += len(out)
        return out

    def get_timer(self) -> float | None:
        """When ``handle_timer``/``datagrams_to_send`` must next be called (None: never)."""
        timers = self._context.timers
        entries = timers.entries  # the heap, read in place: this runs after every input
        if len(entries) > _COMPACT_FLOOR:
            self._compact_timers()
        while entries:
            deadline, _, kind, target = entries[0]
            if not self._timer_is_live(deadline, kind, target):
                timers.pop()
                continue
            if kind is TimerKind.PEER_IDLE:
                assert isinstance(target, tuple)
                if self._context.peers.settle_idle(target, deadline) is None:
                    continue  # moved on to the peer's true deadline: this entry is stale
            return deadline
        return None

    def _timer_is_live(self, deadline: float, kind: TimerKind, target: Any) -> bool:
        # ``target`` is what ``kind`` says (``timers.Entry``); no isinstance check or
        # ``cast`` call: this runs on every look at the heap.
        if kind is TimerKind.ACK or kind is TimerKind.REQUEST_RETRY:
            return self._download_timer_is_live(kind, target, deadline)
        if kind is TimerKind.PEER_IDLE:
            return self._idle_is_live(target, deadline)
        return self._upload_timer_is_live(kind, target, deadline)

    def _compact_timers(self) -> None:
        timers = self._context.timers
        armed = len(self._receiver.downloads) + len(self._sender.uploads)
        if len(timers) > _COMPACT_FLOOR + _STALE_TIMERS_PER_LIVE * 3 * armed:
            timers.compact(self._timer_is_live)

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        events = self._context.events
        return events.popleft() if events else None

    def has_events(self) -> bool:
        """Whether ``next_event`` has one to give."""
        return bool(self._context.events)

    # -- introspection for statistics and tests ------------------------------------------

    @property
    def active_downloads(self) -> int:
        return len(self._receiver.downloads)

    @property
    def active_uploads(self) -> int:
        return len(self._sender.uploads)

    def flow_window(self, peer: Address, mode: Mode) -> float | None:
        """Congestion window (packets) of our flow to ``peer`` in ``mode``, if any."""
        flow = self._sender.flows.get((peer, mode))
        return None if flow is None else flow.cc.cwnd

    def flow_srtt(self, peer: Address, mode: Mode) -> float | None:
        """Smoothed RTT (seconds) of our flow to ``peer`` in ``mode``, if measured."""
        flow = self._sender.flows.get((peer, mode))
        return None if flow is None else flow.rtt.srtt
