"""The office's bandwidth caps on this client's downloads (foreground, background).

The console sets them per office; the server passes them on at registration
(``Registered.foreground_kbps``, ``background_kbps``). Each capped mode is a token
bucket; the downloads ask it how many chunks they may request now, and when none, it
arms a timer for when one will pass.
"""

from __future__ import annotations

from shoal.protocol.ratelimit import TokenBucket
from shoal.protocol.transfer import Mode
from shoal.wire.control import Registered


class BandwidthCaps:
    """Token buckets for the capped modes, and when the next held-back chunk may go."""

    def __init__(self) -> None:
        self._buckets: dict[Mode, TokenBucket] = {}
        self._due: float | None = None

    def apply(self, reply: Registered, now: float) -> str:
        """The office's policy from a registration; returns the note to show."""
        self._buckets = {}
        for mode, kbps in (
            (Mode.FOREGROUND, reply.foreground_kbps),
            (Mode.BACKGROUND, reply.background_kbps),
        ):
            if kbps:
                rate = kbps * 1000 / 8
                self._buckets[mode] = TokenBucket(rate, burst=max(rate / 4, 65536), now=now)
        if not (self._buckets or reply.max_downloads):
            return ""
        return (
            f"; office policy: foreground {reply.foreground_kbps or 'unlimited'} kbit/s, "
            f"background {reply.background_kbps or 'unlimited'} kbit/s, "
            f"{reply.max_downloads or 'any number of'} downloads at once"
        )

    def affordable(self, mode: Mode, chunk_size: int, now: float) -> int | None:
        """How many chunks the cap lets us request now (None: uncapped); when none,
        the timer is armed for when one will pass."""
        bucket = self._buckets.get(mode)
        if bucket is None:
            return None
        available = bucket.available(now)
        count = int(available // chunk_size) if available >= chunk_size else 0
        if count == 0 and available >= min(chunk_size, bucket.burst):
            count = 1  # a chunk larger than the burst passes from a full bucket
        if count == 0:
            due = bucket.ready_at(chunk_size, now)
            self._due = min(self._due or due, due)
        return count

    def spend(self, mode: Mode, length: int, now: float) -> None:
        """A request of ``length`` bytes went out."""
        bucket = self._buckets.get(mode)
        if bucket is not None:
            bucket.take(length, now)

    def get_timer(self) -> float | None:
        return self._due

    def handle_timer(self, now: float) -> None:
        if self._due is not None and self._due <= now:
            self._due = None  # the downloads ask again for what the cap held back
