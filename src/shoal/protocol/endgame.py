"""When the endgame may duplicate a request in flight (``ChunkPicker``'s clock).

A request is *late* ``endgame_after`` x its peer's expected request-to-arrival time
after it was asked, or, once its first bytes came (``started``), after that: a chunk
that is being served finishes sooner than a duplicate that would wait in another
uploader's line and then share its uplink, so only a stalled one is duplicated. Where
the uplinks bind, every duplicate that runs takes an uplink from a chunk another client
needs (half a chunk on average: the loser is cancelled when the winner arrives).
"""

from __future__ import annotations

from collections.abc import Container, Hashable
from typing import Generic, TypeVar

Peer = TypeVar("Peer", bound=Hashable)


class RequestTimes(Generic[Peer]):
    """When each request in flight was asked and when its first bytes came, and each
    peer's delivery rate (chunks per second from request to arrival, smoothed)."""

    __slots__ = ("_asked_at", "_median_rate", "_started_at", "rates")

    def __init__(self) -> None:
        self._asked_at: dict[tuple[int, Peer], float] = {}
        self._started_at: dict[tuple[int, Peer], float] = {}
        self.rates: dict[Peer, float] = {}
        self._median_rate: float | None = None  # of the measured peers but origins

    def sample(self, peer: Peer, rate: float, origins: Container[Peer]) -> None:
        previous = self.rates.get(peer)
        self.rates[peer] = rate if previous is None else 0.7 * previous + 0.3 * rate
        self._rates_changed(origins)

    def forget_peer(self, peer: Peer, origins: Container[Peer]) -> None:
        if self.rates.pop(peer, None) is not None:
            self._rates_changed(origins)

    def _rates_changed(self, origins: Container[Peer]) -> None:
        rates = sorted(rate for peer, rate in self.rates.items() if peer not in origins)
        self._median_rate = rates[len(rates) // 2] if rates else None

    def asked(self, chunk_index: int, peer: Peer, now: float) -> None:
        self._asked_at[(chunk_index, peer)] = now

    def started(self, chunk_index: int, peer: Peer, now: float) -> None:
        if (chunk_index, peer) in self._asked_at:
            self._started_at.setdefault((chunk_index, peer), now)  # the first bytes

    def has_started(self, chunk_index: int, peer: Peer) -> bool:
        return (chunk_index, peer) in self._started_at

    def forget(self, chunk_index: int, peer: Peer) -> float | None:
        """The request ended; when it was asked (None: not timed)."""
        self._started_at.pop((chunk_index, peer), None)
        return self._asked_at.pop((chunk_index, peer), None)

    def late_at(
        self, chunk_index: int, peer: Peer, endgame_after: float | None, origin: bool
    ) -> float | None:
        """When the request is late (None: already, or untimed), at the faster of the
        peer's rate and the office's median (not one slow delivery: a restart);
        unmeasured: at once."""
        key = (chunk_index, peer)
        when = self._started_at.get(key, self._asked_at.get(key))
        rate = self.rates.get(peer)
        if endgame_after is None or rate is None or when is None:
            return None
        if not origin and self._median_rate is not None:
            rate = max(rate, self._median_rate)
        return when + endgame_after / rate
