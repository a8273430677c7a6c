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

A chunk we hold a prefix of (``shoal.client.partials``: loaded from its partial file
after a restart, or kept when a request was cut) and not the chunk is asked of the
server too, stripe or not (``resuming``; ``shoal.client.resume_asks``): the server
serves the rest of such a chunk off the stripes (``shoal.server.resumes``), at most
``RESUME_MAX`` per device and content. One it refuses ``BUSY`` (the office has it, or
it is cut on its way to another device, or resumed by one) is not asked off the lease
again (``declined``): its prefix waits for whoever is asked the chunk next.

State is one entry per chunk refused (at most the content's chunk count), and at most
``RESUME_MAX`` chunks resumed off the lease.
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
RESUME_MAX = 4
"""Chunks off the lease whose rest the server is asked at once: what it serves a device
per content (``shoal.server.resumes.PER_DEVICE``)."""


class ServerOrigin:
    """The chunks the server serves this download (``granted``), but those held back."""

    def __init__(self) -> None:
        self.granted: ChunkSet | None = None
        """What the last lease answer makes the server an origin of (None: nothing)."""
        self._held_until: dict[int, float] = {}
        self._last_hold: dict[int, float] = {}
        self.refusals = 0
        """BUSY refusals from the server, over the download."""
        self.answered = False
        """A lease answer came: the server knows us, and may be asked."""
        self.resuming: set[int] = set()
        """Chunks off the lease we hold a prefix of: the server is asked their rest."""
        self._declined: set[int] = set()

    def grant(self, chunks: ChunkSet | None) -> None:
        """The lease answer: the server serves ``chunks`` (None: none)."""
        self.granted = None if chunks is None else chunks.copy()
        self.answered = True

    def resume(self, chunk_index: int) -> bool:
        """We hold a prefix of ``chunk_index`` and not the chunk: ask the server its rest
        (off the lease, ``RESUME_MAX`` at once, once refused never again); True if added."""
        if (
            chunk_index in self.resuming
            or chunk_index in self._declined
            or len(self.resuming) >= RESUME_MAX
            or (self.granted is not None and chunk_index in self.granted)
        ):
            return False
        self.resuming.add(chunk_index)
        return True

    def resumed(self, chunk_index: int) -> None:
        """``chunk_index`` arrived (from whoever): no rest of it to ask."""
        self.resuming.discard(chunk_index)

    def refused(self, chunk_index: int, now: float) -> float:
        """The server refused ``chunk_index`` BUSY: hold it back; returns until when."""
        self.refusals += 1
        if chunk_index in self.resuming:  # off the lease: its prefix waits for a peer
            self.resuming.discard(chunk_index)
            self._declined.add(chunk_index)
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

    def offered(self, chunk_count: int) -> ChunkSet | None:
        """What the server may be asked for now: the granted chunks and those resumed
        off the lease, not held back (None: nothing, or no lease answer yet)."""
        if not self.answered or (self.granted is None and not self.resuming):
            return None
        offered = ChunkSet(chunk_count) if self.granted is None else self.granted.copy()
        for chunk_index in self.resuming:
            offered.add(chunk_index)
        for chunk_index in self._held_until:
            offered.discard(chunk_index)
        return offered
