"""What the receiver, the sender and loss recovery of one engine share.

``EngineContext`` holds the engine-wide pieces every side writes to: the configuration,
the counters, the event queue, the queue of control datagrams (with its bound and the
reply budget for unproven addresses, RFC 9000 §8.1), the timer heap, the table of peers
(``PeerTable``: whose transfers run with whom, and when each peer was last heard), and
the memory of recently finished requests (``Finished``), used to answer late datagrams.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from shoal.protocol.ratelimit import TokenBucket
from shoal.protocol.transfer.config import TransferConfig
from shoal.protocol.transfer.counters import TransferCounters
from shoal.protocol.transfer.events import Address, Event
from shoal.protocol.transfer.states import ReceiveState, SendState
from shoal.protocol.transfer.timers import DeadlineHeap, TimerKind
from shoal.wire.messages import RefusalReason

if TYPE_CHECKING:
    from shoal.protocol.transfer.download import Download
    from shoal.protocol.transfer.upload import Upload

_K = TypeVar("_K")


def _nobody(peer_ip: str, now: float) -> bool:
    return False


class Finished:
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


class RecentRequests(Generic[_K]):
    """The last ``limit`` finished requests, oldest forgotten first."""

    __slots__ = ("_limit", "_table")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._table: OrderedDict[_K, Finished] = OrderedDict()

    def get(self, key: _K) -> Finished | None:
        return self._table.get(key)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def forget(self, key: _K) -> None:
        del self._table[key]

    def remember(self, key: _K, finished: Finished) -> None:
        table = self._table
        table[key] = finished
        table.move_to_end(key)
        while len(table) > self._limit:
            table.popitem(last=False)


class _PeerTransfers:
    __slots__ = ("downloads", "idle_armed", "uploads")

    def __init__(self) -> None:
        # Insertion-ordered, so per-peer loops see transfers in the order they began.
        self.downloads: dict[int, Download] = {}
        self.uploads: dict[int, Upload] = {}
        #: The PEER_IDLE deadline pushed for this peer (never later than the true one).
        self.idle_armed: float | None = None


class PeerTable:
    """Every peer with a transfer in either direction, and its transfers.

    A peer is silent when none of its transfers, in either direction, has heard from it
    for ``idle_timeout``: a transfer waiting its turn behind others of the same peer is
    not abandoned. Its PEER_IDLE timer is armed once, when it gets its first transfer, at
    the earliest the peer could fall silent; the engine moves it on, when it comes up, to
    the peer's true deadline (a peer heard from since is not silent yet).
    """

    __slots__ = ("_idle_timeout", "_peers", "_timers")

    def __init__(self, idle_timeout: float, timers: DeadlineHeap) -> None:
        self._idle_timeout = idle_timeout
        self._timers = timers
        self._peers: dict[Address, _PeerTransfers] = {}

    def _enter(self, peer: Address, last_heard: float) -> _PeerTransfers:
        transfers = self._peers.get(peer)
        if transfers is None:
            transfers = self._peers[peer] = _PeerTransfers()
        if transfers.idle_armed is None:
            transfers.idle_armed = last_heard + self._idle_timeout
            self._timers.push(transfers.idle_armed, TimerKind.PEER_IDLE, peer)
        return transfers

    def _leave(self, peer: Address) -> None:
        transfers = self._peers[peer]
        if not transfers.downloads and not transfers.uploads:
            # Its idle entry goes stale; a transfer started later arms a new one.
            del self._peers[peer]

    def add_download(self, download: Download) -> None:
        self._enter(download.peer, download.last_heard).downloads[download.request_id] = download

    def remove_download(self, download: Download) -> None:
        del self._peers[download.peer].downloads[download.request_id]
        self._leave(download.peer)

    def add_upload(self, upload: Upload) -> None:
        self._enter(upload.peer, upload.last_heard).uploads[upload.request_id] = upload

    def remove_upload(self, upload: Upload) -> None:
        del self._peers[upload.peer].uploads[upload.request_id]
        self._leave(upload.peer)

    def knows(self, peer: Address) -> bool:
        """Has ``peer`` a transfer with us, either way?"""
        return peer in self._peers

    def downloads_of(self, peer: Address) -> dict[int, Download]:
        transfers = self._peers.get(peer)
        return {} if transfers is None else transfers.downloads

    def uploads_of(self, peer: Address) -> dict[int, Upload]:
        transfers = self._peers.get(peer)
        return {} if transfers is None else transfers.uploads

    def last_heard(self, peer: Address) -> float:
        """When any transfer with ``peer`` last heard from it (it must have one)."""
        transfers = self._peers[peer]
        heard = float("-inf")
        for download in transfers.downloads.values():
            if heard < download.last_heard:
                heard = download.last_heard
        for upload in transfers.uploads.values():
            if heard < upload.heard:
                heard = upload.heard
        return heard

    def pass_on_liveness(self, peer: Address, last_heard: float) -> None:
        """A finished transfer hands its last sign of life to the peer's downloads, which
        may have waited their turn without hearing anything themselves. (Uploads judge
        their peer by the ACKs of their flow: ``Upload.heard``.)"""
        transfers = self._peers.get(peer)
        if transfers is None:
            return
        for download in transfers.downloads.values():
            if download.last_heard < last_heard:
                download.last_heard = last_heard

    def idle_is_live(self, peer: Address, deadline: float) -> bool:
        """Is ``deadline`` the PEER_IDLE entry armed for ``peer``?"""
        transfers = self._peers.get(peer)
        return transfers is not None and transfers.idle_armed == deadline

    def settle_idle(self, peer: Address, deadline: float) -> float | None:
        """The armed PEER_IDLE ``deadline`` of ``peer`` came up (it is live): return it if
        the peer falls silent then; else re-arm at its true deadline and return None."""
        transfers = self._peers[peer]
        true_deadline = self.last_heard(peer) + self._idle_timeout
        if true_deadline <= deadline:
            return deadline
        transfers.idle_armed = true_deadline
        self._timers.push(true_deadline, TimerKind.PEER_IDLE, peer)
        return None

    def credit_stall(self, seconds: float) -> None:
        """This process did not run for ``seconds``: that time is no peer's silence.
        Every transfer counts as heard that much later (what its peer sent meanwhile may
        still wait, unread, in the socket); a peer that is really silent is given up
        that much later, never more than our own stall."""
        for transfers in self._peers.values():
            for download in transfers.downloads.values():
                download.last_heard += seconds
            for upload in transfers.uploads.values():
                upload.last_heard = upload.heard + seconds

    def disarm_idle(self, peer: Address) -> None:
        transfers = self._peers.get(peer)
        if transfers is not None:
            transfers.idle_armed = None

    def arm_idle(self, peer: Address) -> None:
        """Arm the peer's PEER_IDLE timer again (after it fired) at its true deadline."""
        transfers = self._peers.get(peer)
        if transfers is not None and transfers.idle_armed is None:
            transfers.idle_armed = self.last_heard(peer) + self._idle_timeout
            self._timers.push(transfers.idle_armed, TimerKind.PEER_IDLE, peer)


class EngineContext:
    """The engine-wide state the receiver, the sender and recovery all write to."""

    __slots__ = (
        "_order",
        "_unvalidated_replies",
        "config",
        "control",
        "counters",
        "events",
        "peers",
        "proven_peer",
        "timers",
    )

    def __init__(self, config: TransferConfig, now: float) -> None:
        self.config = config
        self.counters = TransferCounters()
        self.events: deque[Event] = deque()
        self.control: list[tuple[bytes, Address]] = []
        self.timers = DeadlineHeap()
        self.peers = PeerTable(config.idle_timeout, self.timers)
        #: (peer IP, now) -> is that address proven by the application's own means (a
        #: discovery token it echoed, the P2P server's list): see ``trust_peers``.
        self.proven_peer: Callable[[str, float], bool] = _nobody
        self._unvalidated_replies = TokenBucket(
            config.unvalidated_reply_rate, max(config.unvalidated_reply_rate / 10, 1.0), now
        )
        self._order = 0

    def next_order(self) -> int:
        """A number for a new transfer: timers of the same wake-up fire in this order."""
        self._order += 1
        return self._order

    def queue_control(self, datagram: bytes, addr: Address) -> None:
        """Queue a control datagram (ACK, request, refusal, ...) ahead of data."""
        if len(self.control) >= self.config.max_control_queue:
            self.counters.control_queue_overflow += 1
            return
        self.control.append((datagram, addr))

    def reply_unvalidated(self, datagram: bytes, addr: Address, now: float) -> bool:
        """Queue a reply to an address that has not proven it receives there, within the
        total ``unvalidated_reply_rate``; False (counted) when over it."""
        if not self._unvalidated_replies.take(1, now):
            self.counters.unvalidated_replies_dropped += 1
            return False
        self.queue_control(datagram, addr)
        return True
