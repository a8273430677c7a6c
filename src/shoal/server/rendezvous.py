"""Rendezvous leases: one WAN copy per office and content, striped over several holders.

Theory of operation
-------------------
An office takes each chunk of a content over its WAN once. Which clients of the office
fetch it from the server is decided here, per (office, content): the content's chunks
are split into ``stripes`` (chunk ``i`` is in stripe ``i % stripes``, see
``shoal.core.stripes``), and each stripe has at most one *holder* at a time, the
client that fetches that stripe's chunks over the WAN and serves them to the office.
The server picks the stripe count when the first client of the office asks (about one
stripe per client of the office that is assigned the content, ``ServerCore``), and
keeps it while any stripe is held, so a stripe's chunks never change hands while they
are being fetched.

Why stripes: with one holder (one stripe, as before) the office's one WAN copy lands on
one client, whose uplink must then send every chunk, one after the other: on slow
client uplinks the office finishes no sooner than F/u plus the time its last chunk
takes to spread (1.49 x the one-copy bound for 16 clients on 20 Mbit/s uplinks and
8 MiB). With one stripe per client every uplink carries new chunks from the start,
which is what the one-copy bound (N-1)F/sum_u assumes, and the WAN still carries each
chunk once.

A client that asks is granted a free stripe if it holds none (a stripe is free when
nobody ever held it, when its holder released it, or when its holder lapsed or
stalled); one that holds stripes renews them and takes every free stripe too (so the
stripe of a holder that died moves to a live one even when every client of the office
already holds a stripe). A stripe nobody has claimed since the group started is
left to clients without a stripe for ``lease_seconds`` first. Every request from a
holder renews its stripes, and so does every chunk the server serves it (``progress``):
a holder whose uplink is congested by what it serves its office may lose renewal
datagrams in its queue, but while it keeps fetching it is alive, so queueing delay
cannot make it look dead. A client that finds every stripe held is redirected to a
holder (it fetches from the office's peers instead of the WAN) and told when to ask
again (when the first stripe would lapse). A holder that dies keeps its stripe for
``lease_seconds``; the next holder of that stripe fetches over the WAN only the chunks
nobody in the office holds (``ChunkPicker``'s origin rule), so a second copy crosses
the WAN only of what died with it.

A holder must also bring chunks into the office: the server notes every chunk it
serves the holder (``progress``). A holder that fetches nothing for ``stall_seconds``
loses its stripes even while it keeps renewing them, and neither that device nor its
address is granted a stripe of the same content again for ``stall_penalty`` seconds.
So a device that renews a lease and never fetches (issue 13, row 7) stalls its office
for at most ``stall_seconds`` (+ one redirected client's retry), and once per device and
address.

The table survives a server restart (``snapshot``/``restore``, kept in the server's
state store with the delivery ledger, ``shoal.server.deliveries``, which holds back a
chunk the office already received from the server): every holder keeps its stripes,
and the stripe count stays.

Offices that never share (VPN) and clients outside every office are not rendezvous
managed: each such client is served directly (``Policy.DIRECT``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from shoal.core.ids import ContentId
from shoal.core.stripes import MAX_STRIPES


class Decision(Enum):
    GRANTED = "granted"
    REDIRECTED = "redirected"


@dataclass(frozen=True, slots=True)
class LeaseAnswer:
    """The server's answer to "may I fetch this content over the WAN?".

    ``stripes`` and ``mask`` say which chunks a granted holder fetches: chunk ``i`` when
    bit ``i % stripes`` of ``mask`` is set (one stripe, mask 1: every chunk).
    """

    decision: Decision
    holder: str
    expires_at: float
    stripes: int = 1
    mask: int = 0


@dataclass(slots=True)
class _Lease:
    holder: str
    renewed_at: float
    progress_at: float
    address: str = ""


@dataclass(slots=True)
class _Group:
    """The stripes of one (office, content): each held by a lease, or free since when."""

    leases: list[_Lease | None]
    free_since: list[float]


class RendezvousTable:
    """Striped leases per (office, content ID); time is passed in."""

    def __init__(
        self,
        lease_seconds: float = 10.0,
        stall_seconds: float = float("inf"),
        stall_penalty: float = 300.0,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.stall_seconds = stall_seconds
        self.stall_penalty = stall_penalty
        self._groups: dict[tuple[str, ContentId], _Group] = {}
        self._penalties: dict[tuple[str, ContentId, str], float] = {}
        self.takeovers = 0
        self.stalls = 0
        self.changes = 0
        """Counts changes a restarted server must know (grants, frees, penalties), not
        renewals: the state store saves the table when it moved (``snapshot``)."""

    def held(self, now: float) -> int:
        """Stripe leases held now (not lapsed), over every office and content."""
        return sum(
            1
            for group in self._groups.values()
            for lease in group.leases
            if lease is not None and not self._lapsed(lease, now)
        )

    def request(
        self,
        office: str,
        content_id: ContentId,
        device: str,
        now: float,
        address: str = "",
        stripes: int = 1,
    ) -> LeaseAnswer:
        """Grant or renew stripes to ``device``, or redirect it to a live holder.

        ``stripes`` is used when the office has no live group for the content yet. A
        redirected answer's expiry is when the first stripe would lapse or be found
        stalled, so the office asks again then. ``holder`` is "" when nobody holds any.
        """
        key = (office, content_id)
        group = self._groups.get(key)
        if group is not None:
            self._free_dead(office, content_id, group, now)
        if group is None or not any(group.leases):
            if group is not None and min(group.free_since) < 0:
                self.takeovers += 1  # its holders lapsed or stalled: a new group takes over
            count = max(1, min(MAX_STRIPES, stripes))
            # Stripes beyond the first wait lease_seconds for a client without a stripe.
            group = self._groups[key] = _Group(
                [None] * count, [now] + [now + self.lease_seconds] * (count - 1)
            )
            self.changes += 1
        if self._punished(office, content_id, device, address, now):
            return self._redirect(group, now)
        mine = [index for index, lease in enumerate(group.leases) if _holds(lease, device)]
        for index in mine:
            lease = group.leases[index]
            assert lease is not None
            lease.renewed_at = now
        free = [
            index
            for index, lease in enumerate(group.leases)
            if lease is None and (not mine or group.free_since[index] <= now)
        ]
        for index in free if mine else free[:1]:
            if group.free_since[index] < 0:
                self.takeovers += 1  # it was held by a holder that lapsed or stalled
            group.leases[index] = _Lease(device, now, now, address)
            self.changes += 1
            mine.append(index)
        if not mine:
            return self._redirect(group, now)
        mask = sum(1 << index for index in mine)
        return LeaseAnswer(
            Decision.GRANTED, device, now + self.lease_seconds, len(group.leases), mask
        )

    def progress(self, office: str, content_id: ContentId, device: str, now: float) -> None:
        """The server served the holder a chunk of this content: it is bringing it in."""
        group = self._groups.get((office, content_id))
        if group is None:
            return
        for lease in group.leases:
            if lease is not None and lease.holder == device:
                lease.progress_at = now

    def may_fetch(
        self, office: str, content_id: ContentId, device: str, chunk_index: int, now: float
    ) -> bool:
        """Does ``device`` hold, live, the stripe of ``chunk_index``?"""
        group = self._groups.get((office, content_id))
        if group is None:
            return False
        lease = group.leases[chunk_index % len(group.leases)]
        return lease is not None and lease.holder == device and not self._dead(lease, now)

    def revoke(self, office: str, device: str) -> None:
        """Take every stripe of ``device`` in ``office`` (it was banned there)."""
        for (group_office, _), group in self._groups.items():
            if group_office == office:
                self._drop(group, lambda lease: lease.holder == device, 0.0)

    def holders(self, office: str, content_id: ContentId, now: float) -> list[str]:
        """The live holders of the content's stripes, in stripe order (no repeats)."""
        group = self._groups.get((office, content_id))
        if group is None:
            return []
        live = [lease.holder for lease in group.leases if lease and not self._dead(lease, now)]
        return list(dict.fromkeys(live))

    def current_holders(self, now: float) -> dict[tuple[str, ContentId], list[str]]:
        """(office, content) -> its live holders, for every group with one (reported to
        the console: who brings each content into each office now)."""
        found = {key: self.holders(*key, now) for key in self._groups}
        return {key: holders for key, holders in found.items() if holders}

    def stripes_held(self, office: str, content_id: ContentId, device: str, now: float) -> set[int]:
        """The stripes of the content whose live lease ``device`` holds in ``office``."""
        group = self._groups.get((office, content_id))
        if group is None:
            return set()
        return {
            stripe
            for stripe, lease in enumerate(group.leases)
            if lease is not None and lease.holder == device and not self._dead(lease, now)
        }

    def holder(self, office: str, content_id: ContentId, now: float) -> str | None:
        """The first live holder, if any (the only one where there is one stripe)."""
        holders = self.holders(office, content_id, now)
        return holders[0] if holders else None

    def stripes(self, office: str, content_id: ContentId) -> int:
        """The stripe count of the office's group for the content (0: none)."""
        group = self._groups.get((office, content_id))
        return len(group.leases) if group is not None else 0

    def release(self, office: str, content_id: ContentId, device: str) -> None:
        """The holder finished (or gave up): its stripes go to the next asker at once."""
        group = self._groups.get((office, content_id))
        if group is not None:
            self._drop(group, lambda lease: lease.holder == device, 0.0)
            if not any(group.leases):
                del self._groups[(office, content_id)]

    def expire(self, now: float) -> None:
        """Drop groups with no live stripe (bounded memory on a long-running server)."""
        for key in [key for key, group in self._groups.items() if not self._live(group, now)]:
            del self._groups[key]
            self.changes += 1
        for penalty in [key for key, until in self._penalties.items() if until <= now]:
            del self._penalties[penalty]

    # ------------------------------------------------------------ persistence

    def snapshot(self, now: float) -> dict[str, Any]:
        """The table as plain values (JSON), to survive a server restart (``restore``).

        Without it a restarted server would grant every stripe anew, in the order its
        holders happen to ask again, with a stripe count taken from whoever has checked
        in since: a holder restarted on its cache then gets another stripe and fetches
        what it does not know the office holds (estate-faults, seed 1: three chunks of
        sixteen fetched a second time)."""
        groups = []
        for (office, content_id), group in self._groups.items():
            groups.append(
                {
                    "office": office,
                    "content_id": content_id.hex,
                    "stripes": [
                        _saved_stripe(lease, since, now)
                        for lease, since in zip(group.leases, group.free_since, strict=True)
                    ],
                }
            )
        penalties = [
            {"office": office, "content_id": content_id.hex, "who": who, "left_s": until - now}
            for (office, content_id, who), until in self._penalties.items()
            if until > now
        ]
        return {"groups": groups, "penalties": penalties}

    def restore(self, saved: dict[str, Any], now: float, elapsed: float) -> None:
        """Take back a ``snapshot`` written ``elapsed`` seconds ago (wall clock).

        Every restored holder counts as renewed and progressing now: nobody could renew
        while the server was down, and a holder that died meanwhile lapses
        ``lease_seconds`` from now as it would have before the restart. Stall penalties
        keep what was left of them."""
        for entry in saved.get("groups", []):
            leases: list[_Lease | None] = []
            free_since: list[float] = []
            for stripe in entry["stripes"][:MAX_STRIPES]:
                if "holder" in stripe:
                    leases.append(_Lease(str(stripe["holder"]), now, now, str(stripe["address"])))
                    free_since.append(now)
                else:
                    leases.append(None)
                    if stripe.get("lapsed"):
                        free_since.append(-1.0)
                    else:
                        free_since.append(now + max(0.0, float(stripe["free_in_s"]) - elapsed))
            if leases:
                key = (str(entry["office"]), ContentId.from_hex(entry["content_id"]))
                self._groups[key] = _Group(leases, free_since)
        for penalty in saved.get("penalties", []):
            left = float(penalty["left_s"]) - elapsed
            if left > 0:
                content_id = ContentId.from_hex(penalty["content_id"])
                self._penalties[(penalty["office"], content_id, penalty["who"])] = now + left

    # ------------------------------------------------------------- internals

    def _free_dead(self, office: str, content_id: ContentId, group: _Group, now: float) -> None:
        for index, lease in enumerate(group.leases):
            if lease is None:
                continue
            if self._stalled(lease, now):
                self._punish(office, content_id, lease, now)
            if self._dead(lease, now):
                group.leases[index] = None
                self.changes += 1
                group.free_since[index] = -1.0  # free now, and counted as a takeover

    def _drop(self, group: _Group, which: Callable[[_Lease], bool], free_since: float) -> None:
        for index, lease in enumerate(group.leases):
            if lease is not None and which(lease):
                group.leases[index] = None
                self.changes += 1
                group.free_since[index] = free_since

    def _redirect(self, group: _Group, now: float) -> LeaseAnswer:
        live = [lease for lease in group.leases if lease is not None]
        if not live:
            return LeaseAnswer(Decision.REDIRECTED, "", now + self.lease_seconds)
        due = min(self._due(lease) for lease in live)
        return LeaseAnswer(Decision.REDIRECTED, live[0].holder, due)

    def _live(self, group: _Group, now: float) -> bool:
        return any(lease is not None and not self._dead(lease, now) for lease in group.leases)

    def _dead(self, lease: _Lease, now: float) -> bool:
        return self._lapsed(lease, now) or self._stalled(lease, now)

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
        self.changes += 1
        if lease.address:
            self._penalties[(office, content_id, "@" + lease.address)] = until

    def _punished(
        self, office: str, content_id: ContentId, device: str, address: str, now: float
    ) -> bool:
        for who in (device, "@" + address if address else None):
            if who is not None and self._penalties.get((office, content_id, who), 0.0) > now:
                return True
        return False

    def _lapsed(self, lease: _Lease, now: float) -> bool:
        """Silent for ``lease_seconds``: neither a renewal nor a chunk fetched."""
        return now - max(lease.renewed_at, lease.progress_at) >= self.lease_seconds


def _saved_stripe(lease: _Lease | None, free_since: float, now: float) -> dict[str, Any]:
    if lease is not None:
        return {"holder": lease.holder, "address": lease.address}
    if free_since < 0:
        return {"lapsed": True}  # its holder lapsed or stalled: the next grant is a takeover
    return {"free_in_s": round(max(0.0, free_since - now), 3)}


def _holds(lease: _Lease | None, device: str) -> bool:
    return lease is not None and lease.holder == device
