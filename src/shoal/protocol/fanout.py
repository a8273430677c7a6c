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

A fast source is asked directly by more downloaders (``fetchers``): as many as it
serves, one hold-back (``GRACE_CHUNK_TIMES`` of its request times) after another, within
``grace``. A source on a 20 Mbit/s uplink (a 128 KiB chunk in 0.2 s or more, with its
other uploads) keeps ``fanout``; one on a 100 Mbit/s uplink behind a WAN as fast (0.05 s)
is asked by three at once: with one, its uplink sat idle while the one copy it had given
was asked by every other downloader at once, and those uploads, shared six ways, left
downlinks idle (downlink idle time while an idle uplink held a chunk the downloader
lacked: mostly chunks held back from their source).

Who ranks above us is the chunk picker's knowledge: it is asked through
``downloaders_ahead`` (see ``shoal.protocol.swarm``, "Fan-out limit" and "Empty-handed
first").
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Sequence
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
    #: (chunk, its source, now) -> how many downloaders rank above us for it
    downloaders_ahead: Callable[[int, Peer, float], int]
    #: a source -> its measured delivery rate to us, chunks per second (None: unmeasured)
    rate: Callable[[Peer], float | None] = _unmeasured
    ahead: dict[int, int] = field(default_factory=dict)  # chunk -> downloaders ahead of us
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
        ahead = self.ahead.get(chunk_index)
        if ahead is None:
            ahead = self.ahead[chunk_index] = self.downloaders_ahead(chunk_index, holder, now)
        if ahead < self.fetchers(holder):
            return True
        deadline = self.deferred.get(chunk_index)
        if deadline is None:
            deadline = self.deferred[chunk_index] = now + self._grace_for(holder)
        if now < deadline:
            return False
        self._release(chunk_index)
        return True

    def fetchers(self, source: Peer) -> int:
        """How many downloaders ask ``source`` for a chunk it alone holds at once: those
        it serves within ``grace``, one hold-back after another (at least ``fanout``)."""
        rate = self.rate(source)
        if not rate:
            return self.fanout
        return max(self.fanout, int(rate * self.grace / GRACE_CHUNK_TIMES))

    def _grace_for(self, source: Peer) -> float:
        rate = self.rate(source)
        return self.grace if not rate else min(self.grace, GRACE_CHUNK_TIMES / rate)

    def downloaders_changed(self) -> None:
        """Who ranks above us may have changed: choose again."""
        self.ahead.clear()

    def forget(self, chunk_index: int) -> None:
        """We hold ``chunk_index`` now (keeps ``waiting`` small: it runs often)."""
        self.ahead.pop(chunk_index, None)
        self.sources.pop(chunk_index, None)
        self.deferred.pop(chunk_index, None)
        self.released.discard(chunk_index)

    def waiting(self, settled: int, bits: Sequence[int]) -> list[float]:
        """When held-back chunks may be asked of their source by anyone, but those that
        need no more asking (held or in flight): their bits (``bits[chunk_index]``) are
        set in the mask ``settled`` (a look per held-back chunk: this runs after every
        full ask of the picker)."""
        return [due for index, due in self.deferred.items() if not settled & bits[index]]

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
