"""Which peer's chunk request to answer next: memory for uploads that does not grow with peers.

Theory of operation
-------------------
Answering a chunk request (``serve_from``) reads the chunk from the store and hands it
to the transfer engine, which keeps it in memory until the peer has acknowledged every
byte. Answered at once, every request of every downloader would be in memory together:
with 1 MiB chunks, 4 requests in flight per downloader and 15 downloaders, 60 MiB.
But the engine sends one flow's chunks oldest first, so a downloader only needs its
next chunk ready, not all four.

``UploadQueue`` keeps requests waiting (the engine holds them as *awaiting the
application*, and the downloader's repeated requests keep them alive) and lets them
through while the bytes handed to the engine stay within ``budget_bytes``; the next one
through is the oldest request of the peer with the fewest bytes in hand, so every
downloader gets its turn. A request a peer cancels, or that times out, leaves the queue.
Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

Address = tuple[str, int]
Request = TypeVar("Request")


@dataclass(frozen=True, slots=True)
class UploadKey:
    """One request of one peer on one of our engines (``engine`` is the mode's value)."""

    engine: int
    peer: Address
    request_id: int


class UploadQueue(Generic[Request]):
    """Requests waiting for memory to answer them; see the module docstring."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._waiting: dict[UploadKey, tuple[Request, int]] = {}  # in order of arrival
        self._in_hand: dict[UploadKey, int] = {}
        self._per_peer: dict[Address, int] = {}
        self.bytes_in_hand = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self, key: UploadKey, request: Request, length: int) -> None:
        """A request arrived (and policy allows it): it waits for its turn."""
        if key not in self._in_hand:
            self._waiting[key] = (request, length)

    def next_ready(self) -> tuple[UploadKey, Request] | None:
        """The request to answer now, taken off the queue; None while memory is spent.

        One request always goes through when nothing is in hand, whatever its size.
        """
        if not self._waiting:
            return None
        per_peer = self._per_peer
        chosen = min(self._waiting, key=lambda key: per_peer.get(key.peer, 0))
        request, length = self._waiting[chosen]
        if self.bytes_in_hand and self.bytes_in_hand + length > self.budget_bytes:
            return None
        del self._waiting[chosen]
        return chosen, request

    def answered(self, key: UploadKey, length: int) -> None:
        """``length`` bytes of ``key`` are now with the engine (0: it was refused)."""
        if length:
            self._in_hand[key] = length
            self._per_peer[key.peer] = self._per_peer.get(key.peer, 0) + length
            self.bytes_in_hand += length

    def ended(self, key: UploadKey) -> None:
        """Delivered, cancelled by the peer or timed out: its memory is free again."""
        self._waiting.pop(key, None)
        length = self._in_hand.pop(key, None)
        if length is None:
            return
        self.bytes_in_hand -= length
        remaining = self._per_peer[key.peer] - length
        if remaining:
            self._per_peer[key.peer] = remaining
        else:
            del self._per_peer[key.peer]
