"""Rendezvous leases: one WAN download per office and content at a time.

Theory of operation
-------------------
When a client asks the server for chunks of a content, the server grants it the
*rendezvous* lease for (office, content) if nobody holds it, or if the holder has been
silent for ``lease_seconds``, or if the holder reported that it holds every chunk (the
office then has them all). Every request from the holder renews the lease. Any other
client of the same office is refused and told who the rendezvous point is, so it
fetches from that peer (and from the others) over the LAN instead of the WAN. When the
holder dies its lease lapses, and the next client to ask takes over: it already holds
the chunks the office has, so the office's WAN bytes stay near one copy.

Offices that never share (VPN) and clients outside every office are not rendezvous
managed: each such client is served directly (``Policy.DIRECT``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from shoal.core.ids import ContentId


class Decision(Enum):
    GRANTED = "granted"
    REDIRECTED = "redirected"


@dataclass(frozen=True, slots=True)
class LeaseAnswer:
    """The server's answer to "may I fetch this content over the WAN?"."""

    decision: Decision
    holder: str
    expires_at: float


@dataclass(slots=True)
class _Lease:
    holder: str
    renewed_at: float


class RendezvousTable:
    """Leases per (office, content ID); time is passed in."""

    def __init__(self, lease_seconds: float = 10.0) -> None:
        self.lease_seconds = lease_seconds
        self._leases: dict[tuple[str, ContentId], _Lease] = {}
        self.takeovers = 0

    def request(self, office: str, content_id: ContentId, device: str, now: float) -> LeaseAnswer:
        """Grant or renew the lease to ``device``, or redirect it to the live holder."""
        key = (office, content_id)
        lease = self._leases.get(key)
        if lease is None or lease.holder == device or self._lapsed(lease, now):
            if lease is not None and lease.holder != device:
                self.takeovers += 1
            lease = self._leases[key] = _Lease(holder=device, renewed_at=now)
            return LeaseAnswer(Decision.GRANTED, device, now + self.lease_seconds)
        return LeaseAnswer(Decision.REDIRECTED, lease.holder, lease.renewed_at + self.lease_seconds)

    def holder(self, office: str, content_id: ContentId, now: float) -> str | None:
        lease = self._leases.get((office, content_id))
        if lease is None or self._lapsed(lease, now):
            return None
        return lease.holder

    def release(self, office: str, content_id: ContentId, device: str) -> None:
        """The holder finished (or gave up): the next request gets the lease at once."""
        lease = self._leases.get((office, content_id))
        if lease is not None and lease.holder == device:
            del self._leases[(office, content_id)]

    def expire(self, now: float) -> None:
        """Drop lapsed leases (bounded memory on a long-running server)."""
        for key in [key for key, lease in self._leases.items() if self._lapsed(lease, now)]:
            del self._leases[key]

    def _lapsed(self, lease: _Lease, now: float) -> bool:
        return now - lease.renewed_at >= self.lease_seconds
