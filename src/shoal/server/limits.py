"""Abuse limits of the P2P server: per-source token buckets, and what they default to.

Every limit is a token bucket (``shoal.protocol.ratelimit.TokenBucket``) keyed by what
it limits (a request kind and a source address, or a device). The table of buckets is
bounded: past ``MAX_TRACKED`` keys the oldest is forgotten, which only gives that key a
full bucket again, so a flood from spoofed addresses costs memory up to the bound and
no more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from shoal.protocol.ratelimit import TokenBucket

MAX_TRACKED = 65_536


@dataclass(frozen=True, slots=True)
class AbuseLimits:
    """The server's limits (all configurable; the defaults suit offices of thousands)."""

    hello_burst: float = 20.0
    hello_rate: float = 2.0
    """Certificate requests per source address: a burst, then per second."""
    register_burst: float = 20.0
    register_rate: float = 0.5
    """REGISTERs per source address (a REGISTER costs an X25519 before its tag is checked)."""
    request_burst: float = 200.0
    request_rate: float = 50.0
    """Other requests (check-ins, leases, peer lists, reports) per source address."""
    refusal_burst: float = 10.0
    refusal_rate: float = 1.0
    """Unauthenticated refusals per source address (each is <= 3x what it answers)."""
    new_devices_per_address: int = 16
    new_device_window: float = 3600.0
    """Distinct devices newly registered from one source address, per window."""
    new_devices_burst: float = 10_000.0
    new_devices_rate: float = 500.0
    """New devices from every address together (spoofed sources): a burst, then per second."""
    client_expiry: float = 30 * 86400.0
    """A device not heard from this long leaves the server's registry (not its seat)."""
    ban_reporters: int = 2
    """Distinct devices that must report a peer before it is banned in their office."""
    reports_per_reporter: int = 16
    max_reports: int = 10_000
    ban_seconds: float = 86400.0
    stall_seconds: float = 60.0
    """A rendezvous point that starts no chunk from the server this long loses the lease
    (a chunk starts as the previous ones arrive: 1 MiB chunks need a WAN of at least
    about 150 kbit/s)."""
    stall_penalty: float = 300.0
    """...and is not granted that lease again for this long."""


class Buckets:
    """Token buckets by key, created full on first use, at most ``MAX_TRACKED`` kept."""

    def __init__(self, burst: float, rate: float, limit: int = MAX_TRACKED) -> None:
        self.burst = burst
        self.rate = rate
        self.limit = limit
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def allow(self, key: Hashable, now: float, amount: int = 1) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.limit:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(amount, now)

    def __len__(self) -> int:
        return len(self._buckets)
