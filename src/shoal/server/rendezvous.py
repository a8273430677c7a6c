"""Rendezvous leases: one WAN download per office and content at a time.

Theory of operation
-------------------
When a client asks the server for chunks of a content, the server grants it the
*rendezvous* lease for (office, content) if nobody holds it, or if the holder has been
silent for ``lease_seconds``, or if the holder reported that it holds every chunk (the
office then has them all). Every request from the holder renews the lease, and so does
every chunk the server serves it (``progress``): a holder whose uplink is congested by
what it serves its office may lose renewal datagrams in its queue, but while it keeps
fetching it is alive, so queueing delay cannot make it look dead. Any other
client of the same office is refused and told who the rendezvous point is, so it
fetches from that peer (and from the others) over the LAN instead of the WAN. When the
holder dies its lease lapses, and the next client to ask takes over: it already holds
the chunks the office has, so the office's WAN bytes stay near one copy.

A holder must also bring chunks into the office: the server notes every chunk it
serves the holder (``progress``). A holder that fetches nothing for ``stall_seconds``
loses the lease even while it keeps renewing it, and neither that device nor its
address is granted the same lease again for ``stall_penalty`` seconds. So a device
that renews a lease and never fetches (issue 13, row 7) stalls its office for at most
``stall_seconds`` (+ one redirected client's retry), and once per device and address.

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
    progress_at: float
    address: str = ""


class RendezvousTable:
    """Leases per (office, content ID); time is passed in."""

    def __init__(
        self,
        lease_seconds: float = 10.0,
        stall_seconds: float = float("inf"),
        stall_penalty: float = 300.0,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.stall_seconds = stall_seconds
        self.stall_penalty = stall_penalty
        self._leases: dict[tuple[str, ContentId], _Lease] = {}
        self._penalties: dict[tuple[str, ContentId, str], float] = {}
        self.takeovers = 0
        self.stalls = 0

    def held(self, now: float) -> int:
        """Leases held now (not lapsed)."""
        return sum(1 for lease in self._leases.values() if not self._lapsed(lease, now))

    def request(
        self, office: str, content_id: ContentId, device: str, now: float, address: str = ""
    ) -> LeaseAnswer:
        """Grant or renew the lease to ``device``, or redirect it to the live holder.

        A redirected answer's expiry is when the holder lapses or would be found stalled,
        so the office asks again then. ``holder`` is "" when nobody may hold it now.
        """
        key = (office, content_id)
        lease = self._leases.get(key)
        if lease is not None and self._stalled(lease, now):
            self._punish(office, content_id, lease, now)
            del self._leases[key]
            lease = None
        if self._punished(office, content_id, device, address, now):
            if lease is None:
                return LeaseAnswer(Decision.REDIRECTED, "", now + self.lease_seconds)
            return LeaseAnswer(Decision.REDIRECTED, lease.holder, self._due(lease))
        if lease is None or lease.holder == device or self._lapsed(lease, now):
            if lease is not None and lease.holder == device:
                lease.renewed_at = now
                return LeaseAnswer(Decision.GRANTED, device, now + self.lease_seconds)
            if lease is not None:
                self.takeovers += 1
            self._leases[key] = _Lease(device, now, now, address)
            return LeaseAnswer(Decision.GRANTED, device, now + self.lease_seconds)
        return LeaseAnswer(Decision.REDIRECTED, lease.holder, self._due(lease))

    def progress(self, office: str, content_id: ContentId, device: str, now: float) -> None:
        """The server served the holder a chunk of this content: it is bringing it in."""
        lease = self._leases.get((office, content_id))
        if lease is not None and lease.holder == device:
            lease.progress_at = now

    def revoke(self, office: str, device: str) -> None:
        """Take every lease of ``device`` in ``office`` (it was banned there)."""
        for key in [
            k for k, lease in self._leases.items() if k[0] == office and lease.holder == device
        ]:
            del self._leases[key]

    def _due(self, lease: _Lease) -> float:
        return min(
            max(lease.renewed_at, lease.progress_at) + self.lease_seconds,
            lease.progress_at + self.stall_seconds,
        )

    def _stalled(self, lease: _Lease, now: float) -> bool:
        return now - lease.progress_at >= self.stall_seconds

    def _punish(self, office: str, content_id: ContentId, lease: _Lease, now: float) -> None:
        self.stalls += 1
        until = now + self.stall_penalty
        self._penalties[(office, content_id, lease.holder)] = until
        if lease.address:
            self._penalties[(office, content_id, "@" + lease.address)] = until

    def _punished(
        self, office: str, content_id: ContentId, device: str, address: str, now: float
    ) -> bool:
        for who in (device, "@" + address if address else None):
            if who is not None and self._penalties.get((office, content_id, who), 0.0) > now:
                return True
        return False

    def holder(self, office: str, content_id: ContentId, now: float) -> str | None:
        lease = self._leases.get((office, content_id))
        if lease is None or self._lapsed(lease, now) or self._stalled(lease, now):
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
        for penalty in [key for key, until in self._penalties.items() if until <= now]:
            del self._penalties[penalty]

    def _lapsed(self, lease: _Lease, now: float) -> bool:
        """Silent for ``lease_seconds``: neither a renewal nor a chunk fetched."""
        return now - max(lease.renewed_at, lease.progress_at) >= self.lease_seconds
