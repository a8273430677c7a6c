"""The fan-out limit of a swarm download: which chunks we hold back from their source.

A chunk that one peer alone holds when we first see it (the rendezvous point's newest
chunk) would be asked of that peer, its *source*, by every downloader at once, and the
source's uplink, not the WAN, would set the office's pace. Only ``fanout`` downloaders
fetch it from the source: those whose key ranks highest for that chunk
(``fanout_score``, rendezvous hashing, so every downloader reaches the same choice
without talking). The others hold back and take it from them a moment later; ``grace``
seconds after we first held back, anyone may ask the source (a chosen downloader is gone
or slow), or sooner where the source is fast: ``GRACE_CHUNK_TIMES`` x the time one of
our requests to it takes (``rate``: its measured chunks per second). The hold-back spares
a slow uplink; a source that delivers a chunk in 40 ms, held back 0.5 s behind a chosen
downloader it had refused BUSY, made most of a fast office's tail (the relay's hops).
Who ranks above us is the chunk picker's knowledge: it is asked through
``ranks_among_fetchers`` (see ``shoal.protocol.swarm``, "Fan-out limit" and
"Empty-handed first").
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Peer = TypeVar("Peer", bound=Hashable)

GRACE_CHUNK_TIMES = 3.0
"""A held-back chunk waits at most this many of the source's measured request-to-arrival
times (and never more than ``grace``): the chosen downloader's request, its arrival and
its holder's push fit in that where the source's uplink is not the office's bottleneck."""


def _unmeasured(peer: object) -> float | None:
    return None


@dataclass(slots=True)
class FanoutLimit(Generic[Peer]):
    fanout: int
    grace: float
    #: (chunk, its source, now) -> are we among the chunk's first fetchers?
    ranks_among_fetchers: Callable[[int, Peer, float], bool]
    #: a source -> its measured delivery rate to us, chunks per second (None: unmeasured)
    rate: Callable[[Peer], float | None] = _unmeasured
    designated: dict[int, bool] = field(default_factory=dict)  # chunk -> among its fetchers
    sources: dict[int, Peer] = field(default_factory=dict)  # chunk -> sole holder when seen
    deferred: dict[int, float] = field(default_factory=dict)  # chunk -> when anyone may ask
    released: set[int] = field(default_factory=set)  # grace over: anyone may ask the source

    def may_fetch(self, chunk_index: int, holder: Peer, sole_holder: bool, now: float) -> bool:
        """May we ask ``holder`` for ``chunk_index`` now? ``sole_holder``: it is the only
        peer known to hold it (read only the first time the chunk is seen)."""
        source = self.sources.get(chunk_index)
        if source is None:
            if not sole_holder:
                return True  # several holders from the start: spread over them
            source = self.sources[chunk_index] = holder
        if holder != source or chunk_index in self.released:
            return True
        designated = self.designated.get(chunk_index)
        if designated is None:
            designated = self.designated[chunk_index] = self.ranks_among_fetchers(
                chunk_index, holder, now
            )
        if designated:
            return True
        deadline = self.deferred.get(chunk_index)
        if deadline is None:
            deadline = self.deferred[chunk_index] = now + self._grace_for(holder)
        if now < deadline:
            return False
        self._release(chunk_index)
        return True

    def _grace_for(self, source: Peer) -> float:
        rate = self.rate(source)
        return self.grace if not rate else min(self.grace, GRACE_CHUNK_TIMES / rate)

    def downloaders_changed(self) -> None:
        """Who ranks above us may have changed: choose again."""
        self.designated.clear()

    def forget(self, chunk_index: int) -> None:
        """We hold ``chunk_index`` now (keeps ``waiting`` small: it runs often)."""
        self.designated.pop(chunk_index, None)
        self.sources.pop(chunk_index, None)
        self.deferred.pop(chunk_index, None)
        self.released.discard(chunk_index)

    def waiting(self, settled: Callable[[int], bool]) -> Iterable[float]:
        """When held-back chunks may be asked of their source by anyone, but those that
        ``settled`` says need no more asking (held or in flight)."""
        return (due for index, due in self.deferred.items() if not settled(index))

    def release_due(self, now: float) -> bool:
        """Release the held-back chunks whose grace is over; True if there were any."""
        due = [index for index, deadline in self.deferred.items() if deadline <= now]
        for chunk_index in due:
            self._release(chunk_index)
        return bool(due)

    def _release(self, chunk_index: int) -> None:
        del self.deferred[chunk_index]
        self.released.add(chunk_index)


def fanout_score(chunk_index: int, key: str) -> int:
    """A downloader's rank for fetching ``chunk_index`` from its source (the highest
    ``fanout`` fetch it first; rendezvous hashing). Discovery pushes a new chunk's
    holding to the top-ranked downloaders, so those the picker designates hear of it."""
    return zlib.crc32(f"{chunk_index}/{key}".encode())
