"""Peers that refused a chunk request BUSY, as a swarm download's picker sees them.

A holder's upload slots (``shoal.protocol.serving.UploadSlots``) refuse BUSY for two
reasons, and the downloader can tell them apart by what it still has asked there:

- it holds no request of ours: its slots and its queue are full. The picker asks it
  nothing until ``wait(peer, until)`` says: a backoff the agent draws, doubled for each
  refusal in a row (``in_a_row``, reset by a chunk it delivers), so 15 downloaders do
  not ask a full holder 40 times a second (refused 23-28 times per chunk received, a
  slow-uplink office of 16 on a loaded machine);
- it still holds a request of ours: it is contended and gives each downloader one turn
  at a time. The picker asks it one chunk at a time until ``one_turn(peer, until)``
  says, instead of being refused again and again for a second chunk (each refusal a
  datagram each way, a timer and a picker pass; ~12 per chunk received in a
  slow-uplink office of 16).

Both tables hold only peers the picker knows (``forget`` when one goes), so they are
bounded by its peer table.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

Peer = TypeVar("Peer", bound=Hashable)


class BusyPeers(Generic[Peer]):
    """Until when each peer is asked nothing, or one chunk at a time."""

    def __init__(self) -> None:
        self.waiting: dict[Peer, float] = {}  # peer -> asked nothing before
        self.one_turn: dict[Peer, float] = {}  # peer -> asked one chunk at a time before
        self._in_a_row: dict[Peer, int] = {}  # peer -> BUSY refusals since its last chunk

    def wait(self, peer: Peer, until: float) -> None:
        self.waiting[peer] = until
        self._in_a_row[peer] = self._in_a_row.get(peer, 0) + 1

    def in_a_row(self, peer: Peer) -> int:
        """BUSY refusals (``wait``) from ``peer`` since it last delivered a chunk."""
        return self._in_a_row.get(peer, 0)

    def backoff(self, peer: Peer, draw: float, most: float) -> float:
        """How long to ask ``peer`` nothing after one more refusal: ``draw`` doubled for
        each refusal in a row, at most ``most``."""
        return min(most, draw * float(1 << min(self.in_a_row(peer), 16)))

    def delivered(self, peer: Peer) -> None:
        self._in_a_row.pop(peer, None)

    def one_at_a_time(self, peer: Peer, until: float) -> None:
        self.one_turn[peer] = until

    def forget(self, peer: Peer) -> None:
        self.waiting.pop(peer, None)
        self.one_turn.pop(peer, None)
        self._in_a_row.pop(peer, None)

    def deadlines(self) -> Iterator[float]:
        """Every time at which a peer's wait or one-turn rule ends."""
        yield from self.waiting.values()
        yield from self.one_turn.values()

    def release_due(self, now: float) -> bool:
        """Drop the waits and one-turn rules over at ``now``; whether any was."""
        due = False
        for table in (self.waiting, self.one_turn):
            over = [peer for peer, until in table.items() if until <= now]
            for peer in over:
                del table[peer]
            due = due or bool(over)
        return due
