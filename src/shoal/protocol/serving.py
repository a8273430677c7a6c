"""Answering a peer's chunk requests: from a content store (clients and servers), and
how many at once (``UploadSlots``, clients)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from enum import Enum
from typing import Generic, Protocol, TypeVar

from shoal.core.errors import ShoalError
from shoal.core.ids import ContentId
from shoal.protocol.penalty import PenaltyBox
from shoal.protocol.transfer import ChunkRequested, RefusalReason, TransferEngine

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")


class ChunkSource(Protocol):
    """What serving needs of a store: membership and verified (re-hashed) chunks."""

    def __contains__(self, content_id: object) -> bool: ...
    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes: ...


def read_servable(
    store: ChunkSource, content_id: ContentId, chunk_index: int, chunk_length: int, offset: int = 0
) -> bytes | memoryview | RefusalReason:
    """The verified chunk a peer asked for, from byte ``offset`` on (a resumed chunk's
    remainder; the engine checked it lies inside ``chunk_length``), or why it is refused:
    ``NOT_FOUND`` for content or a chunk not held (or gone bad on disk),
    ``INVALID_REQUEST`` for a length that is not the chunk's. Serving on the loop and the
    client's reader thread share it; the whole chunk is read and re-hashed either way."""
    if content_id not in store:
        return RefusalReason.NOT_FOUND
    try:
        data = store.read_chunk(content_id, chunk_index)
    except (ShoalError, IndexError):
        return RefusalReason.NOT_FOUND
    return servable_part(data, chunk_length, offset)


def servable_part(
    data: bytes | bytearray, chunk_length: int, offset: int = 0
) -> bytes | memoryview | RefusalReason:
    """A verified chunk's bytes from ``offset`` on, for a request of ``chunk_length``
    (``INVALID_REQUEST`` for a length that is not the chunk's): the cache's chunk
    (``read_servable``) or one still in memory (``shoal.client.serving``)."""
    if len(data) != chunk_length:
        return RefusalReason.INVALID_REQUEST
    if offset:
        return memoryview(data)[offset:]
    return data if isinstance(data, bytes) else memoryview(data)


def serve_from(
    store: ChunkSource,
    engine: TransferEngine,
    event: ChunkRequested,
    now: float,
    path_rate: float | None = None,
) -> int:
    """Send the requested chunk if ``store`` holds it verified; else refuse it
    (``path_rate``: see ``TransferEngine.send_chunk``).

    Returns the bytes sent (0 when refused): ``NOT_FOUND`` for content or a chunk not
    held (or gone bad on disk), ``INVALID_REQUEST`` for a length that is not the chunk's.
    """
    chunk = read_servable(
        store, event.content_id, event.chunk_index, event.chunk_length, event.offset
    )
    if isinstance(chunk, RefusalReason):
        engine.refuse_chunk(event.peer, event.request_id, chunk, now)
        return 0
    engine.send_chunk(event.peer, event.request_id, chunk, now, path_rate=path_rate)
    return len(chunk)


class Admission(Enum):
    """What to do with a chunk request now (``UploadSlots.offer``)."""

    START = "start"  # serve it now
    WAIT = "wait"  # hold it: it starts when a slot frees (``UploadSlots.finished``)
    REFUSE = "refuse"  # refuse it BUSY: the requester asks another holder


class UploadSlots(Generic[Key, Item]):
    """How many chunks a peer uploads at once, sized by how fast its uplink serves them.

    A peer that sends one chunk to every downloader at once shares its uplink between
    them all: on a slow uplink every downloader then gets its chunk late, all at the same
    moment, and none of them can pass it on meanwhile. Serving a few at a time, each at
    the uplink's full rate, hands each chunk on in one chunk time, so it spreads through
    the office as a tree. The number of slots follows each upload's measured rate (a
    delay signal, like a congestion window): a chunk delivered slower than
    ``target_rate`` takes a slot away (down to one), one delivered at more than twice
    that while requests had to wait adds one (up to ``maximum``). A rate, not a chunk
    time: a chunk of 1 MiB takes 8x the time of one of 128 KiB at the same rate, and
    with a time target a 30 Mbit/s uplink (0.27 s a MiB alone) never grew a second slot
    and lost its only one whenever the downloader's own link, shared with other
    uploads, made a chunk take over the target; its uplink then idled half the time
    (a 20-device office of the estate simulation ended at 2.12 x T_lb1; 1.30 x with
    the rate: docs/network.md, "Upload slots sized by rate, not chunk time").
    ``target_rate``'s 256 KiB/s is the 0.5 s the time target gave a chunk of 128 KiB,
    the chunk size of packages up to 16 MiB. Beside the running uploads,
    requests wait their turn (so the uplink never idles between chunks) as long as the
    queue would start the last of them within ``hold_seconds`` at the measured chunk
    time (at least as many as slots, at most ``max_waiting``); the rest are refused
    BUSY, and their requesters ask other holders. A refused requester asks again after
    a backoff, so a queue of one chunk time made a slow-uplink office's downloaders ask
    and be refused ~12 times per chunk received (a datagram each way, a timer and a
    picker pass each): held, the request is served in its turn instead, and a
    requester's measured rate of this peer counts the wait.

    Every running upload keeps its chunk in memory until the peer has acknowledged it,
    so the chunk bytes of the running uploads also stay within ``max_bytes`` (one upload
    always runs, whatever its size): memory that does not grow with the number of
    downloaders.

    A hostile peer of the office could otherwise take the uplink for itself: ask for
    chunks and never acknowledge them, so each request holds a slot until the transfer's
    idle timeout, and ask again at once. Two rules keep one peer (an IP address: its
    ports are free to choose) from starving the others:

    - a peer holds ``max_turns_per_peer`` uploads (running or waiting) at most, and
      under contention one: a request from a peer that already has an upload running or
      waiting is refused BUSY when it cannot start at once. One peer's uploads share
      one flow and go out one after another, so more turns would not serve it faster;
    - a peer whose upload ended in silence (``finished(..., silent=True)``: the idle
      timeout, not a cancel) is refused every request while it sits in a
      ``PenaltyBox`` (``penalty_seconds``, doubled for each further silent end up to
      ``max_penalty_seconds``, halved back by each delivered chunk). An honest peer
      that crashed asks other holders meanwhile; a stalling one ends up holding a slot
      for a vanishing share of the time.
    """

    def __init__(
        self,
        *,
        target_rate: float = 256 * 1024,
        initial: int = 1,
        maximum: int = 64,
        max_bytes: int = 8 << 20,
        max_turns_per_peer: int = 2,
        hold_seconds: float = 1.0,
        max_waiting: int = 64,
        penalty_seconds: float = 10.0,
        max_penalty_seconds: float = 300.0,
        max_penalised: int = 4096,
    ) -> None:
        self.target_rate = target_rate
        self.maximum = maximum
        self.max_bytes = max_bytes
        self.max_turns_per_peer = max_turns_per_peer
        self.slots = initial
        self.hold_seconds = hold_seconds
        self.max_waiting = max_waiting
        #: Seconds a slot takes to deliver a chunk, smoothed (None: none delivered yet).
        self.chunk_seconds: float | None = None
        self._active: dict[Key, tuple[float, int]] = {}  # key -> (when it started, bytes)
        self._waiting: OrderedDict[Key, tuple[Item, int]] = OrderedDict()
        self._peer_of: dict[Key, Hashable] = {}  # running or waiting key -> its peer
        self._turns: dict[Hashable, int] = {}  # peer -> its running and waiting uploads
        self.penalties: PenaltyBox[Hashable] = PenaltyBox(
            penalty_seconds, max_penalty_seconds, max_penalised
        )
        #: Chunk bytes of the running uploads.
        self.bytes_active = 0
        self._contended = False
        self.refused = 0
        #: Refused because the peer already had its turn, or sits out a penalty.
        self.refused_unfair = 0

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def queue_limit(self) -> int:
        """How many requests may wait: those the slots start within ``hold_seconds`` at
        the measured chunk time, at least one per slot, at most ``max_waiting``."""
        if self.chunk_seconds is None:
            return self.slots
        held = int(self.slots * self.hold_seconds / max(self.chunk_seconds, 1e-3))
        return max(self.slots, min(self.max_waiting, held))

    def _may_start(self, length: int) -> bool:
        if len(self._active) >= self.slots:
            return False
        return not self._active or self.bytes_active + length <= self.max_bytes

    def _start(self, key: Key, length: int, now: float) -> None:
        self._active[key] = (now, length)
        self.bytes_active += length

    def _take_turn(self, key: Key, peer: Hashable | None) -> None:
        if peer is not None:
            self._peer_of[key] = peer
            self._turns[peer] = self._turns.get(peer, 0) + 1

    def _end_turn(self, key: Key) -> Hashable | None:
        peer = self._peer_of.pop(key, None)
        if peer is not None:
            left = self._turns[peer] - 1
            if left:
                self._turns[peer] = left
            else:
                del self._turns[peer]
        return peer

    def penalised(self, peer: Hashable, now: float) -> bool:
        """Whether ``peer`` sits out a penalty for a silent upload at ``now``."""
        return self.penalties.penalised(peer, now)

    def offer(
        self, key: Key, item: Item, now: float, length: int = 0, peer: Hashable | None = None
    ) -> Admission:
        """A new request for ``length`` bytes from ``peer``: start it, hold it (``item``
        comes back from ``finished``), or refuse it."""
        turns = self._turns.get(peer, 0) if peer is not None else 0
        if turns >= self.max_turns_per_peer or (peer is not None and self.penalised(peer, now)):
            self.refused += 1
            self.refused_unfair += 1
            return Admission.REFUSE
        if self._may_start(length):
            self._start(key, length, now)
            self._take_turn(key, peer)
            return Admission.START
        self._contended = True
        if turns:
            self.refused += 1
            self.refused_unfair += 1
            return Admission.REFUSE
        if len(self._waiting) < self.queue_limit:
            self._waiting[key] = (item, length)
            self._take_turn(key, peer)
            return Admission.WAIT
        self.refused += 1
        return Admission.REFUSE

    def finished(
        self, key: Key, now: float, *, delivered: bool, silent: bool = False
    ) -> list[Item]:
        """An upload ended (``delivered``: acknowledged in full; else cancelled, timed
        out or refused after all; ``silent``: the peer stopped answering, the idle
        timeout): return the waiting requests to start now."""
        peer = self._end_turn(key)
        if peer is not None:
            if delivered:
                self.penalties.forgive(peer)
            elif silent:
                self.penalties.penalise(peer, now)
        running = self._active.pop(key, None)
        if running is None:
            self._waiting.pop(key, None)
            return []
        started, length = running
        self.bytes_active -= length
        if delivered:
            duration = now - started
            previous = self.chunk_seconds
            self.chunk_seconds = duration if previous is None else 0.75 * previous + 0.25 * duration
            # Compared as times (length / rate), which a zero duration cannot break.
            if duration > length / self.target_rate and self.slots > 1:
                self.slots -= 1
            elif duration < length / self.target_rate / 2 and self._contended:
                self.slots = min(self.maximum, self.slots + 1)
                self._contended = False
        starting: list[Item] = []
        while self._waiting:
            waiting_key, (item, waiting_length) = next(iter(self._waiting.items()))
            if not self._may_start(waiting_length):
                break
            del self._waiting[waiting_key]
            self._start(waiting_key, waiting_length, now)
            starting.append(item)
        return starting
