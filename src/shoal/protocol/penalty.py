"""A penalty box: peers that misbehaved sit out for a time that grows with each offence.

Used on both sides of a transfer: an uploader refuses a peer whose upload went silent
(``serving.UploadSlots``), a downloader ignores the announcements of a peer whose chunks
never came (``client.agent``). An honest peer that crashed once sits out the first,
short penalty and is asked again; one that keeps failing sits out a doubling time, so
it holds a slot or a request for a vanishing share of the time. Each good deed (a
chunk delivered) halves the next penalty back. The table is bounded: past ``capacity``
entries the oldest offender is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class PenaltyBox(Generic[Key]):
    """Who sits out, and until when (time passed in)."""

    def __init__(
        self, first_seconds: float = 10.0, max_seconds: float = 300.0, capacity: int = 4096
    ) -> None:
        self.first_seconds = first_seconds
        self.max_seconds = max_seconds
        self.capacity = capacity
        #: key -> (sits out until, the penalty its next offence earns)
        self._entries: OrderedDict[Key, tuple[float, float]] = OrderedDict()
        self.penalties = 0

    def __len__(self) -> int:
        return len(self._entries)

    def penalise(self, key: Key, now: float) -> float:
        """``key`` misbehaved at ``now``: return until when it sits out. While it sits out,
        another offence is the same one heard again (each request of one silence times
        out on its own) and does not double the penalty."""
        entry = self._entries.get(key)
        if entry is not None and now < entry[0]:
            return entry[0]
        _until, earned = self._entries.pop(key, (now, self.first_seconds))
        until = now + earned
        self._entries[key] = (until, min(self.max_seconds, 2 * earned))
        self.penalties += 1
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return until

    def forgive(self, key: Key) -> None:
        """``key`` did well: halve its next penalty (forget it once back to the first)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        until, earned = entry
        if earned / 2 <= self.first_seconds:
            del self._entries[key]
        else:
            self._entries[key] = (until, earned / 2)

    def pardon_first(self, key: Key, now: float) -> bool:
        """``key`` spoke again after its offence: end its sit-out if that was its first
        (a crash and a restart on the same cache: the new process announces what it
        holds, maybe before our requests to the old one time out; sat out for the whole
        first penalty, its office fetched what it held over the WAN again). A second
        offence earns the doubled penalty, not pardoned, so a peer that announces and
        stalls costs one more silence at most. Returns whether it was pardoned."""
        entry = self._entries.get(key)
        if entry is None or now >= entry[0] or entry[1] > 2 * self.first_seconds:
            return False
        self._entries[key] = (now, entry[1])
        return True

    def penalised(self, key: Key, now: float) -> bool:
        """Whether ``key`` sits out a penalty at ``now``."""
        entry = self._entries.get(key)
        return entry is not None and now < entry[0]
