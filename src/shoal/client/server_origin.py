"""What the P2P server is an origin of for one download, and the chunks it refused lately.

Theory of operation
-------------------
The lease answer (``shoal.client.lease``) says which chunks the server serves us: our
stripes (granted), every chunk (direct), or none (redirected). A ``BUSY`` refusal from
the server is about one chunk: it is not in our stripes any more, or the office already
received it from the server (the delivery ledger, ``shoal.server.deliveries``, holds it
back for up to a lease period so that we take it from that peer), or the server's upload
slots for our address are full. Asked of the server again at once, such a chunk is
refused again, round trip after round trip.

So a refused chunk is *held back*: the server is not asked for it for a while (0.5 s
after its first refusal, twice as long after each further one, at most ``HOLD_MAX``),
and meanwhile discovery may name a peer that holds it (it searches every second). Only
that chunk: the server's other answers come on as they are (a chunk it is sending, its
other requests queued behind it), so a refusal discards no byte that is on its way, and
nothing is asked twice. A chunk that nobody we know holds (its receiver is on other
ports, or gone) is asked of the server again after each hold, a handful of times over a
lease period, and served once the ledger lets it go; one that the stripes moved away is
dropped by the next lease answer.

State is one entry per chunk refused (at most the content's chunk count).
"""

from __future__ import annotations

from shoal.core.chunkset import ChunkSet

HOLD_FIRST = 0.5
"""Seconds a chunk the server refused is not asked of it again, after the first refusal
(half a discovery interval: time for a peer that holds it to be heard of)."""
HOLD_MAX = 2.0
"""Seconds: the longest hold (each refusal doubles it up to this). The ledger lets a
chunk go a lease period (10 s by default) after it first refused it: a chunk nobody can
give us is asked again at most this late after that, refused about 3 + period / 2
times in all (every round trip before)."""


class ServerOrigin:
    """The chunks the server serves this download (``granted``), but those held back."""

    def __init__(self) -> None:
        self.granted: ChunkSet | None = None
        """What the last lease answer makes the server an origin of (None: nothing)."""
        self._held_until: dict[int, float] = {}
        self._last_hold: dict[int, float] = {}
        self.refusals = 0
        """BUSY refusals from the server, over the download."""

    def grant(self, chunks: ChunkSet | None) -> None:
        """The lease answer: the server serves ``chunks`` (None: none)."""
        self.granted = None if chunks is None else chunks.copy()

    def refused(self, chunk_index: int, now: float) -> float:
        """The server refused ``chunk_index`` BUSY: hold it back; returns until when."""
        self.refusals += 1
        hold = min(2 * self._last_hold.get(chunk_index, HOLD_FIRST / 2), HOLD_MAX)
        self._last_hold[chunk_index] = hold
        until = self._held_until[chunk_index] = now + hold
        return until

    def held(self, chunk_index: int) -> bool:
        return chunk_index in self._held_until

    def next_release(self) -> float | None:
        """When the next hold ends (None: no chunk is held back)."""
        return min(self._held_until.values(), default=None)

    def release_due(self, now: float) -> bool:
        """End the holds that are over; True if any did (``offered`` changed)."""
        due = [index for index, until in self._held_until.items() if until <= now]
        for chunk_index in due:
            del self._held_until[chunk_index]
        return bool(due)

    def offered(self) -> ChunkSet | None:
        """What the server may be asked for now: the granted chunks not held back."""
        if self.granted is None:
            return None
        offered = self.granted.copy()
        for chunk_index in self._held_until:
            offered.discard(chunk_index)
        return offered
