"""A token bucket: at most ``rate`` bytes per second on average, bursts up to ``burst``.

The agent uses one per transfer mode to honour an office's bandwidth policy: a chunk
is requested only when the bucket holds its length, so the average rate of what a
client downloads stays under the cap whoever sends it. Time is passed in.
"""

from __future__ import annotations


class TokenBucket:
    """Bytes allowed now; refilled at ``rate`` bytes per second up to ``burst``."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, amount: int, now: float) -> bool:
        """Spend ``amount`` bytes if the bucket holds them (a larger amount than the
        burst may be taken from a full bucket, so no chunk is too big to ever pass)."""
        self._refill(now)
        if self._tokens >= min(amount, self.burst):
            self._tokens -= amount
            return True
        return False

    def available(self, now: float) -> float:
        """Bytes that may be taken now (negative while in debt after a large take)."""
        self._refill(now)
        return self._tokens

    def ready_at(self, amount: int, now: float) -> float:
        """When ``take(amount)`` would next succeed."""
        self._refill(now)
        missing = min(amount, self.burst) - self._tokens
        # Strictly later when short, even by a rounding error: a caller that waits
        # until then must find the tokens there (or it would wake at the same instant).
        return now if missing <= 0 else now + max(missing / self.rate, 1e-6)
