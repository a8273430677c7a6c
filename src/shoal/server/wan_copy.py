"""Each office's WAN copy of a content: rendezvous leases, stripes, the delivery ledger.

Theory of operation
-------------------
A client in a sharing office (Default or WiFi) fetches a content from the server only
while it holds the rendezvous lease for (office, content) (``lease``); a client in a
VPN office, or in no office when ``direct_outside_offices`` allows it, is told to
fetch directly. The first lease of an office splits the content in stripes: one where
the office's links say one client's uplink outruns its WAN many times over, else one
per client of the office assigned it and seen lately (``max_stripes`` at most), so
that every uplink carries new chunks from the start (``shoal.server.stripe_plan``;
``shoal.server.rendezvous`` for the leases). The data
plane reports each chunk it served (``chunk_served``: the holder is not stalling) and
each chunk delivered in full (``chunk_delivered``: the office now holds it,
``shoal.server.deliveries``); ``may_fetch`` then lets a holder fetch only its stripes'
chunks the office does not hold yet, and a chunk cut on its way to another holder, which
may ask the rest of it, last (``shoal.server.cut_chunks``). A holder that completes
releases its lease (``release_lease``); a banned peer gets no lease and is left out of
peer lists (``office_peers``), and a ban revokes what it held (``revoke``).

The leases and the ledger are saved as plain values (``lease_state``, whenever
``lease_changes`` moves) and restored after a restart (``restore_lease_state``).

What it reads of the registry (clients, their offices, assignments, manifests,
settings) it reads through ``OfficeDirectory`` (``ServerCore``); time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from shoal.core.address import Address
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest
from shoal.server.bad_peers import BadPeerBook
from shoal.server.cut_chunks import CutChunks
from shoal.server.deliveries import DeliveryLedger, Presence
from shoal.server.registry import ClientRecord, ServerSettings
from shoal.server.rendezvous import Decision, RendezvousTable
from shoal.server.resumes import Resumes
from shoal.server.stripe_plan import stripe_count
from shoal.wire.control import (
    ControlBody,
    LeaseDecision,
    LeaseReply,
    OfficeType,
    RefusalCause,
    Refused,
)

__all__ = ["OfficeDirectory", "WanCopy"]

_SHARING = (OfficeType.DEFAULT, OfficeType.WIFI)


class OfficeDirectory(Protocol):
    """What the WAN copy reads of the server's registry (``ServerCore``)."""

    @property
    def settings(self) -> ServerSettings: ...

    @property
    def clients(self) -> dict[bytes, ClientRecord]: ...

    @property
    def manifests(self) -> dict[ContentId, Manifest]: ...

    def office_of(self, ip: str) -> tuple[str | None, OfficeType]: ...

    def client_at(self, ip: str) -> ClientRecord | None: ...

    def clients_in(self, office: str) -> Iterable[ClientRecord]:
        """The registered clients of ``office`` (registry order), without a full scan."""
        ...

    def is_assigned(
        self, client: ClientRecord, content_id: ContentId, office: str | None
    ) -> bool: ...


class WanCopy:
    """Rendezvous leases, stripes and the delivery ledger of every office."""

    def __init__(
        self,
        directory: OfficeDirectory,
        rendezvous: RendezvousTable,
        deliveries: DeliveryLedger,
        bad_peers: BadPeerBook,
    ) -> None:
        self.directory = directory
        self.rendezvous = rendezvous
        self.deliveries = deliveries
        self.bad_peers = bad_peers
        self.restored_at: float | None = None
        """When the saved leases and ledger were taken back (a restarted server)."""
        self.resumes = Resumes()
        self.cut_chunks = CutChunks(deliveries.hold_seconds, deliveries.keep_seconds)
        """Chunks begun and not delivered: held for their device when its stripe passes
        on (``shoal.server.cut_chunks``)."""

    def chunk_served(
        self,
        client_ip: str,
        content_id: ContentId,
        now: float,
        chunk_index: int | None = None,
        resumed: bool = False,
    ) -> None:
        """The data plane served a chunk of ``content_id`` to ``client_ip``: if it is the
        office's rendezvous point, it is bringing the content in (not stalling); in a
        sharing office, ``chunk_index`` (``resumed``: its rest) is on its way to it until
        delivered (``cut_chunks``)."""
        directory = self.directory
        client = directory.client_at(client_ip)
        if client is None:
            return
        office, office_type = directory.office_of(client_ip)
        if office is not None:
            device = client.device_id.hex()
            self.rendezvous.progress(office, content_id, device, now)
            if chunk_index is not None and office_type in _SHARING:
                self.cut_chunks.served(office, content_id, device, chunk_index, now, resumed)

    def flow_rate(self, client_ip: str, content_id: ContentId) -> float | None:
        """What one holder's flow from the server may carry (bytes/s): its office's WAN
        (the link profile) shared by the content's stripes there that still have chunks
        to bring in (``open_stripes``), each fetched by its own flow; None where the
        office's links are not known. A fresh flow's slow start over a long round trip
        otherwise takes several round trips to reach it (a 128 KiB chunk from a
        32-packet window: three)."""
        office, _ = self.directory.office_of(client_ip)
        links = self.directory.settings.office_links.get(office) if office else None
        if office is None or links is None:
            return None
        return links.wan_mbit * 1e6 / 8 / self.open_stripes(office, content_id)

    def open_stripes(self, office: str, content_id: ContentId) -> int:
        """The office's stripes of the content with a chunk not delivered yet (at least
        one). Stripes differ by a chunk (32 chunks in 6 stripes: 6, 6, 5, 5, 5, 5) and
        their holders by speed, so the last stripes finish alone: each on a flow sized
        for its share of the whole WAN, which then idles (the simulator's fast-uplink
        cell: 40% and 23% busy in the copy's last 60 ms). Counting only the open
        stripes gives the last flows the WAN the finished ones left."""
        return max(1, len(self._open_stripe_indices(office, content_id)))

    def _open_stripe_indices(self, office: str, content_id: ContentId) -> set[int]:
        """The office's stripes of the content with a chunk not delivered yet (none
        where the content is not striped there)."""
        stripes = self.rendezvous.stripes(office, content_id)
        manifest = self.directory.manifests.get(content_id)
        if stripes <= 1 or manifest is None:
            return set()
        delivered = [0] * stripes
        for chunk_index in self.deliveries.chunk_indices(office, content_id):
            delivered[chunk_index % stripes] += 1
        count = manifest.chunk_count
        sizes = (len(range(stripe, count, stripes)) for stripe in range(stripes))
        return {
            stripe
            for stripe, (done, size) in enumerate(zip(delivered, sizes, strict=True))
            if done < size
        }

    def holder_rate(self, client_ip: str, content_id: ContentId, now: float) -> float | None:
        """What the server's flow to the holder at ``client_ip`` may carry (bytes/s): a
        share (``flow_rate``) for each open stripe it holds, at least one. A holder that
        took over a second stripe fetches both on its one flow, which is held to this
        rate after a loss (``Flow.rate_cap``): one share would halve it."""
        share = self.flow_rate(client_ip, content_id)
        client = self.directory.client_at(client_ip)
        office, _ = self.directory.office_of(client_ip)
        if share is None or client is None or office is None:
            return share
        held = self.rendezvous.stripes_held(office, content_id, client.device_id.hex(), now)
        if len(held) <= 1:
            return share  # the usual case: the ledger is not read a second time
        return share * max(1, len(held & self._open_stripe_indices(office, content_id)))

    def holder_ips(self, office: str, content_id: ContentId, now: float) -> list[str]:
        """The addresses of the office's live holders of the content."""
        clients = self.directory.clients
        found = (
            clients.get(bytes.fromhex(device))
            for device in self.rendezvous.holders(office, content_id, now)
        )
        return [client.ip for client in found if client is not None]

    def chunk_delivered(
        self, client_ip: str, content_id: ContentId, chunk_index: int, now: float
    ) -> tuple[list[str], float] | None:
        """The data plane delivered a chunk in full (every byte acknowledged) to the
        client at ``client_ip``: in a sharing office, the office now holds it. When that
        closed a stripe of an office whose links are known: the other holders'
        addresses and what each one's flow may carry now (``flow_rate``), so that the
        flows left fill the WAN (``TransferEngine.raise_path_rate``)."""
        directory = self.directory
        client = directory.client_at(client_ip)
        office, office_type = directory.office_of(client_ip)
        if content_id not in directory.manifests:
            return None  # a blob (assignments, manifest), not a content chunk
        if client is None or office is None or office_type not in _SHARING:
            return None
        first_copy = chunk_index not in self.deliveries.chunk_indices(office, content_id)
        self.resumes.delivered(office, content_id, chunk_index)
        self.cut_chunks.delivered(office, content_id, chunk_index)
        self.deliveries.delivered(office, content_id, client.device_id.hex(), chunk_index, now)
        if not first_copy or not self._closed_a_stripe(office, content_id, chunk_index):
            return None
        rate = self.flow_rate(client_ip, content_id)
        return (self.holder_ips(office, content_id, now), rate) if rate is not None else None

    def _closed_a_stripe(self, office: str, content_id: ContentId, chunk_index: int) -> bool:
        """Whether every chunk of ``chunk_index``'s stripe is delivered now (that stripe's
        chunks looked up, not the office's ledger counted: this runs per delivery)."""
        stripes = self.rendezvous.stripes(office, content_id)
        if stripes <= 1:
            return False
        held = self.deliveries.chunk_indices(office, content_id)
        count = self.directory.manifests[content_id].chunk_count
        return all(index in held for index in range(chunk_index % stripes, count, stripes))

    def may_fetch(
        self,
        office: str,
        device: str,
        content_id: ContentId,
        chunk_index: int | None,
        now: float,
        resumed: bool = False,
    ) -> bool:
        """May ``device`` (hex ID), of the sharing ``office``, fetch ``content_id`` from
        the server now: does it hold the lease (with ``chunk_index``: a stripe with that
        chunk, which the office does not hold yet, or the rest of it when ``resumed``,
        stripe or not: ``shoal.server.resumes``)?"""
        if chunk_index is None:
            return device in self.rendezvous.holders(office, content_id, now)
        cut_chunks = self.cut_chunks
        if not resumed:
            cut_chunks.asked_whole(office, content_id, device, chunk_index)
        striped = self.rendezvous.may_fetch(office, content_id, device, chunk_index, now)
        if not (striped or resumed) or self.resumes.held_for_other(
            office, content_id, device, chunk_index, now
        ):
            return False
        present = self._present(office, now, device, content_id)
        if cut_chunks.held_for_other(office, content_id, device, chunk_index, now, present):
            return False  # cut on its way to another holder, which may ask the rest
        if self.deliveries.in_office(office, content_id, device, chunk_index, now, present):
            return False
        return striped or self.resumes.admit(office, content_id, device, chunk_index, now)

    def _present(self, office: str, now: float, asker: str, content_id: ContentId) -> Presence:
        """Is a device (hex ID) still in ``office``: seen within two check-in periods,
        at an address of the office, not banned there, and not reported by ``asker``
        (hex ID) for bad chunks of ``content_id``?

        The asker's own report counts at once, before the reports of others ban the
        peer: a device that caught a peer lying would otherwise be refused what the liar
        was delivered, and wait out its hold of those chunks (in the lab's corrupt-peer
        scenario the liar held the whole package from the server: the office's WAN copy
        started ~0.5 s late in about half the runs). A false report costs at most the
        reporter's stripes once more over the WAN (reports per reporter are bounded).

        A device the registry does not know counts as present for two check-in periods
        after a restart: it registered after the registry was last saved (every
        ``report_seconds``) and, once complete, is heard from only at its next check-in.
        Counted absent, what the restored ledger says it holds could cross the WAN
        again: in a simulator run (estate-faults --ci, seed 6, with a prototype that
        delayed holders) a restarted client took over stripes released by holders that
        had completed, and fetched 7 of 16 chunks its idle peers held (1.50 F)."""
        directory = self.directory
        horizon = now - 2 * directory.settings.checkin_seconds
        unheard = self.restored_at is not None and self.restored_at > horizon
        reporter = bytes.fromhex(asker)

        def present(device: str) -> bool:
            client = directory.clients.get(bytes.fromhex(device))
            if client is None:
                return unheard
            return (
                client.last_seen >= horizon
                and directory.office_of(client.ip)[0] == office
                and not self.bad_peers.is_banned(office, client.ip, now)
                and not self.bad_peers.reported(office, content_id, client.ip, reporter)
            )

        return present

    def process_gone(self, client_ip: str) -> None:
        """Nothing listens at ``client_ip``'s data port any more (ICMP port unreachable):
        its process died, with what it held of the chunks cut on their way to it."""
        client = self.directory.client_at(client_ip)
        office, _ = self.directory.office_of(client_ip)
        if client is not None and office is not None:
            self.cut_chunks.process_gone(office, client.device_id.hex())

    def revoke(self, office: str, device: str) -> None:
        """``device`` (hex ID) was banned in ``office``: its lease goes, and what it was
        delivered counts no more as in the office."""
        self.rendezvous.revoke(office, device)
        self.deliveries.forget_device(office, device)

    def expire(self, now: float) -> None:
        """Drop leases and ledger entries past their time."""
        self.rendezvous.expire(now)
        self.deliveries.expire(now)
        self.cut_chunks.expire(now)

    def lease_state(self, now: float) -> dict[str, Any]:
        """The rendezvous leases and the delivery ledger as plain values (JSON), for the
        state store: a restarted server keeps each office's holders and what it already
        sent them (``restore_lease_state``)."""
        return {
            "rendezvous": self.rendezvous.snapshot(now),
            "deliveries": self.deliveries.snapshot(now),
            "cut_chunks": self.cut_chunks.snapshot(now),
        }

    @property
    def lease_changes(self) -> tuple[int, int, int]:
        """Moves whenever ``lease_state`` holds something new (not at mere renewals)."""
        return self.rendezvous.changes, self.deliveries.changes, self.cut_chunks.changes

    def restore_lease_state(self, saved: dict[str, Any], now: float, elapsed: float) -> None:
        """Take back ``lease_state`` saved ``elapsed`` seconds ago (wall clock)."""
        self.rendezvous.restore(saved.get("rendezvous", {}), now, elapsed)
        self.deliveries.restore(saved.get("deliveries", []), now, elapsed)
        self.cut_chunks.restore(saved.get("cut_chunks", []), now, elapsed)
        self.restored_at = now

    def release_lease(self, client: ClientRecord, content_id: ContentId) -> None:
        """A complete rendezvous point has brought every chunk into the office: its lease
        goes now, not lease_seconds after it falls silent."""
        office, _ = self.directory.office_of(client.ip)
        if office is not None:
            self.rendezvous.release(office, content_id, client.device_id.hex())

    def lease(self, client: ClientRecord, content_id: ContentId, now: float) -> ControlBody:
        """The answer to a client's LEASE: granted (with its stripes), redirected to the
        office's holder, direct (VPN or no office), or refused."""
        directory = self.directory
        settings = directory.settings
        if content_id not in directory.manifests:
            return Refused(
                RefusalCause.UNKNOWN_CONTENT, f"content {content_id.short} is not on this server"
            )
        office, office_type = directory.office_of(client.ip)
        if office is None or office_type in (OfficeType.VPN, OfficeType.NONE):
            if office is None and not settings.direct_outside_offices:
                return Refused(
                    RefusalCause.NOT_ASSIGNED,
                    f"{client.ip} is outside every known network; direct "
                    "download from the server is disabled by policy",
                )
            return LeaseReply(content_id, LeaseDecision.DIRECT, (client.ip, 0), 0)
        if self.bad_peers.is_banned(office, client.ip, now):
            return Refused(
                RefusalCause.NOT_ASSIGNED,
                f"{client.ip} is banned in office {office}: devices reported bad chunks from it",
            )
        stripes = 1  # used only when the office has no live holder: counted then
        if not self.rendezvous.holders(office, content_id, now):
            stripes = self._stripe_count(office, content_id, now)
        device = client.device_id.hex()
        self.cut_chunks.leased(office, device, now)  # a restarted process is back
        answer = self.rendezvous.request(office, content_id, device, now, client.ip, stripes)
        valid_ms = int(max(0.0, answer.expires_at - now) * 1000)
        if answer.decision is Decision.GRANTED:
            return LeaseReply(
                content_id,
                LeaseDecision.GRANTED,
                (client.ip, settings.data_port),
                valid_ms,
                answer.stripes,
                answer.mask,
            )
        holder = directory.clients.get(bytes.fromhex(answer.holder)) if answer.holder else None
        holder_ip = holder.ip if holder is not None else "0.0.0.0"
        return LeaseReply(
            content_id, LeaseDecision.REDIRECTED, (holder_ip, settings.data_port), valid_ms
        )

    def _stripe_count(self, office: str, content_id: ContentId, now: float) -> int:
        """How many stripes an office's WAN copy of a content is split in
        (``shoal.server.stripe_plan``): one where the office's link profile says one
        uplink outruns its WAN many times over, else one per client of the office that
        will ask for it, at most ``max_stripes`` and the chunk count.

        Those are the clients assigned it, seen lately and that have not reported
        holding it whole. A client that already holds the content never asks for a
        lease, so a stripe counted for it would lie unclaimed for ``lease_seconds``
        before a holder takes it over (corrupt-peer lab: T_last 1.7 s -> 6.6 s, the liar
        already holding the package)."""
        directory = self.directory
        settings = directory.settings
        manifest = directory.manifests.get(content_id)
        chunk_count = manifest.chunk_count if manifest else 1
        cap = min(settings.max_stripes, chunk_count)
        if cap <= 1:
            return 1
        horizon = now - 3 * settings.checkin_seconds
        candidates = 0
        for other in directory.clients_in(office):
            if (
                other.last_seen >= horizon
                and directory.is_assigned(other, content_id, office)
                and not _holds_whole(other, content_id)
            ):
                candidates += 1
                if candidates >= cap:
                    break
        return stripe_count(settings.office_links.get(office), candidates, chunk_count, cap)

    def office_peers(
        self, client: ClientRecord, content_id: ContentId, now: float
    ) -> tuple[Address, ...]:
        """The client's office peers seen lately and not banned there (those holding
        ``content_id`` first, then the most recently seen), at most 128."""
        directory = self.directory
        office, _ = directory.office_of(client.ip)
        if office is None:
            return ()
        horizon = now - 3 * directory.settings.checkin_seconds
        candidates = [
            other
            for other in directory.clients_in(office)
            if other is not client
            and other.last_seen >= horizon
            and not self.bad_peers.is_banned(office, other.ip, now)
        ]
        candidates.sort(key=lambda other: (content_id not in other.content, -other.last_seen))
        return tuple((other.ip, directory.settings.discovery_port) for other in candidates[:128])


def _holds_whole(client: ClientRecord, content_id: ContentId) -> bool:
    """Has ``client`` reported (in its last check-in) every chunk of the content?"""
    progress = client.content.get(content_id)
    return progress is not None and 0 < progress.chunk_count <= progress.chunks_done
