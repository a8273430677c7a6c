"""The P2P server's decisions, without I/O: registry, licensing, rendezvous, blobs.

Theory of operation
-------------------
``handle_control`` takes one authenticated control message from a client and returns
the reply body; ``may_serve_content`` tells the data plane whether a client may fetch
a content's chunks from this server now. Everything else is state fed from the
console link (activation, licence, topology, assignments, manifests) and read back for
reports (the client registry, download statistics).

Every message reaching ``handle_control`` was authenticated by ``ServerControl`` with
its device's control key and carries a fresh counter (``accept_counter``): the device
ID is the sender's own. A REGISTER also proved that the device receives at its source
address (an address token); only a REGISTER places a device at an address, and any
other request from another address is answered ``UNKNOWN_DEVICE`` (register again).
Values are validated at this boundary (``INVALID_REQUEST`` names the field): no control
characters or overlong host names and versions, ``chunks_done <= chunk_count``, byte
counters below 2^62.

Admission, in order: the server must be activated (``NOT_ACTIVATED``), the client's
version must be supported (``VERSION_UNSUPPORTED``, saying what to upgrade), the
licence must not have expired (``LICENCE_EXPIRED``) and the console must not have
refused this device a seat (``NOT_LICENSED``); any request but ``REGISTER`` from a
device the server does not know gets ``UNKNOWN_DEVICE`` (the client then registers).
Overage (more installs than seats) is allowed and reported in ``REGISTERED``.

Content goes only where the console sent it: the server serves a content's chunks only
to a registered device that the current assignment document assigns it to (a device,
its office's subtree, or everyone), whatever its office or lease.

WAN budget: a client in a sharing office (Default or WiFi) may fetch a content from
the server only while it holds the rendezvous lease for (office, content); a client in
a VPN office, or in no office when ``direct_outside_offices`` allows it, is served
directly. Abuse limits (``shoal.server.limits.AbuseLimits``): at most
``new_devices_per_address`` new devices per source address and window, and a global
rate of new devices; registry entries of devices silent for ``client_expiry`` leave
the registry (their console seat stays until retired in the console); a rendezvous
point that brings no chunk loses its lease (``RendezvousTable``). Leases, stripes and
what was delivered into each office: ``shoal.server.wan_copy``.

Bad-peer reports and bans: ``shoal.server.bad_peers``. A banned peer gets no lease, is
left out of peer lists, every check-in reply of its office names it, and the chunks the
data plane still had for it (queued or under way) are refused (``ServerNode.poll``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from shoal import __version__
from shoal.assignments import assigned_entries, entry_applies
from shoal.core.address import Address
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest, decode_manifest_file
from shoal.server.bad_peers import BadPeerBook, BadPeerReport, PeerBanned
from shoal.server.control_keys import ControlKeys
from shoal.server.deliveries import DeliveryLedger
from shoal.server.limits import Buckets
from shoal.server.office_roster import OfficeRoster
from shoal.server.registry import BandwidthLimit, ClientRecord, LicenceView, ServerSettings
from shoal.server.rendezvous import RendezvousTable
from shoal.server.validation import invalid_request
from shoal.server.wan_copy import WanCopy
from shoal.topology import Topology
from shoal.versions import IncompatibleVersion, InvalidVersion, Role, check_compatible
from shoal.wire.control import (
    BadPeer,
    CheckIn,
    CheckInReply,
    ContentProgress,
    ControlBody,
    ControlMessage,
    InstallReport,
    InstallStatus,
    Lease,
    LicenceState,
    ManifestInfo,
    ManifestReply,
    Noted,
    Nudge,
    OfficeType,
    PeerList,
    Peers,
    RefusalCause,
    Refused,
    Register,
    Registered,
)

__all__ = [
    "EXPIRY_SWEEP",
    "MAX_CLIENTS",
    "MAX_INSTALLS_PER_CLIENT",
    "BadPeerReport",
    "BandwidthLimit",
    "ClientRecord",
    "LicenceView",
    "PeerBanned",
    "ServerCore",
    "ServerSettings",
]

MAX_CLIENTS = 100_000
MAX_INSTALLS_PER_CLIENT = 256
"""Install records kept per device (its assigned versions, and those it uninstalls)."""
_UNINSTALL_STATES = frozenset(
    {InstallStatus.UNINSTALLING, InstallStatus.UNINSTALLED, InstallStatus.UNINSTALL_FAILED}
)
EXPIRY_SWEEP = 60.0


class ServerCore:
    """Registry, admission, rendezvous and blobs of one P2P server."""

    def __init__(self, settings: ServerSettings, *, version: str = __version__) -> None:
        self.settings = settings
        self.version = version
        self.topology: Topology | None = None
        # Office by client address, for the topology it was computed with (an address is
        # placed once, not on every scan of the registry: see ``office_of``).
        self._office_memo: dict[str, tuple[str | None, OfficeType]] = {}
        self._office_memo_topology: Topology | None = None
        self.licence = LicenceView()
        self.device_refusals: dict[bytes, str] = {}
        self.clients: dict[bytes, ClientRecord] = {}
        self._device_at: dict[str, bytes] = {}  # client address -> device ID (data plane)
        self._roster = OfficeRoster()  # the clients by office (``clients_in``)
        self._roster_topology: Topology | None = None
        limits = settings.limits
        self.rendezvous = RendezvousTable(
            settings.lease_seconds, limits.stall_seconds, limits.stall_penalty
        )
        self.deliveries = DeliveryLedger(
            hold_seconds=settings.lease_seconds,
            keep_seconds=max(limits.client_expiry, 10 * settings.checkin_seconds),
        )
        """Which chunks the server delivered into each office, and to whom: a chunk is
        not sent over an office's WAN again while its receiver is there."""
        self.certificate: bytes | None = None
        """This server's certificate from the console (``HELLO`` answers it)."""
        self.bad_peers = BadPeerBook(limits)
        self.banned_to_stop: list[str] = []
        """Peer IPs banned since the data plane last looked: it ends what it still
        sends them (``ServerNode.poll``)."""
        self.wan_copy = WanCopy(self, self.rendezvous, self.deliveries, self.bad_peers)
        """Each office's WAN copy: leases, stripes, the delivery ledger
        (``shoal.server.wan_copy``)."""
        self.requests_handled: dict[str, int] = {}
        """Authenticated control requests admitted, per message type (REGISTER, CHECK_IN...)."""
        self._new_devices = Buckets(
            limits.new_devices_per_address,
            limits.new_devices_per_address / limits.new_device_window,
        )
        self._all_new_devices = Buckets(limits.new_devices_burst, limits.new_devices_rate)
        self.control_keys = ControlKeys(settings.identity, settings.enrollment_token)
        self.expired: list[bytes] = []
        """Device IDs that left the registry (the shell deletes their rows)."""
        self.registered: set[bytes] = set()
        """Device IDs that registered since the shell last saved their rows (it saves them
        within a second: ``StateSaver.save_loop``)."""
        self._next_sweep = 0.0
        self.refusals_sent: dict[RefusalCause, int] = {}
        self.recent_refusals: deque[tuple[bytes, Address, Refused]] = deque(maxlen=1000)
        self._blobs: dict[bytes, bytes] = {}
        self._manifests: dict[ContentId, bytes] = {}
        self.manifests: dict[ContentId, Manifest] = {}
        self._assigned: dict[ContentId, list[Any]] = {}  # content -> assignment entries
        self._assignments_digest = hashlib.sha256(b"").digest()
        self._assignments_length = 0
        self._nudges: deque[bytes] = deque()  # device IDs to tell of new assignments

    # --------------------------------------------------- fed from the console

    def set_assignments(self, signed_document: bytes) -> None:
        """The console's signed assignment document, relayed to clients as a blob."""
        old = self._assignments_digest
        digest = hashlib.sha256(signed_document).digest()
        self._blobs.pop(old, None)
        self._blobs[digest] = signed_document
        self._assigned = assigned_entries(signed_document)
        self._assignments_digest, self._assignments_length = digest, len(signed_document)
        if digest != old:
            self._nudges = deque(
                device_id
                for device_id, client in self.clients.items()
                if client.control_address is not None
            )

    def take_nudges(self, limit: int) -> list[tuple[bytes, Address, Nudge]]:
        """Up to ``limit`` clients to tell that the assignments changed, and what to say."""
        nudge = Nudge(self._assignments_digest, self._assignments_length)
        taken: list[tuple[bytes, Address, Nudge]] = []
        while self._nudges and len(taken) < limit:
            client = self.clients.get(self._nudges.popleft())
            if client is not None and client.control_address is not None:
                taken.append((client.device_id, client.control_address, nudge))
        return taken

    @property
    def nudges_pending(self) -> bool:
        return bool(self._nudges)

    def add_manifest(self, manifest_file: bytes) -> ContentId:
        """A signed manifest from the console; raises ``ManifestError`` if unreadable."""
        manifest = decode_manifest_file(manifest_file).manifest
        self._manifests[manifest.content_id] = manifest_file
        self.manifests[manifest.content_id] = manifest
        self._blobs[hashlib.sha256(manifest_file).digest()] = manifest_file
        return manifest.content_id

    def remove_manifest(self, content_id: ContentId) -> None:
        manifest_file = self._manifests.pop(content_id, None)
        self.manifests.pop(content_id, None)
        if manifest_file is not None:
            self._blobs.pop(hashlib.sha256(manifest_file).digest(), None)

    def blob(self, digest: bytes) -> bytes | None:
        """A blob (assignment document or manifest file) by its SHA-256."""
        return self._blobs.get(digest)

    # ------------------------------------------------------------ decisions

    def office_of(self, ip: str) -> tuple[str | None, OfficeType]:
        """The client's office name and type by its address (``NONE`` if in no office).

        Memoised per topology: the peer lists and stripe counts scan every registered
        client, and parsing each address again made a 10,000-device estate's leases
        quadratic in parse time (issue 10). Bounded: cleared when it holds MAX_CLIENTS."""
        topology = self.topology
        if topology is None:
            return None, OfficeType.NONE
        if self._office_memo_topology is not topology:
            self._office_memo, self._office_memo_topology = {}, topology
        placed = self._office_memo.get(ip)
        if placed is None:
            office = topology.office_for_address(ip)
            placed = (None, OfficeType.NONE) if office is None else (office.name, office.type.code)
            if len(self._office_memo) >= MAX_CLIENTS:
                self._office_memo.clear()
            self._office_memo[ip] = placed
        return placed

    # ------------------------------------------------------ authentication

    def control_key_for(self, public_key: bytes) -> bytes | None:
        """The control key shared with the holder of ``public_key`` (``ControlKeys``)."""
        return self.control_keys.key_for(public_key)

    def control_key_of(self, device_id: bytes) -> bytes | None:
        """The control key of a registered device, or ``None``."""
        client = self.clients.get(device_id)
        if client is None or not client.public_key:
            return None
        if client.control_key is None:
            client.control_key = self.control_key_for(client.public_key)
        return client.control_key

    def accept_counter(self, device_id: bytes, counter: int) -> bool:
        """Is ``counter`` above the last one accepted from this device? (then it is the
        last). A device not in the registry has none yet: its REGISTER sets it."""
        client = self.clients.get(device_id)
        if client is None:
            return True
        if counter <= client.last_counter:
            return False
        client.last_counter = counter
        return True

    def note_refusal(self, device_id: bytes, addr: Address, refusal: Refused) -> None:
        self.refusals_sent[refusal.cause] = self.refusals_sent.get(refusal.cause, 0) + 1
        self.recent_refusals.append((device_id, addr, refusal))

    def handle_control(self, message: ControlMessage, addr: Address, now: float) -> ControlBody:
        """Decide the reply to one authenticated control message."""
        body = message.body
        if now >= self._next_sweep:
            self.expire_clients(now)
        refusal = invalid_request(body) or self._admission(message, now)
        if refusal is not None:
            self.note_refusal(message.device_id, addr, refusal)
            return refusal
        kind = type(body).__name__
        self.requests_handled[kind] = self.requests_handled.get(kind, 0) + 1
        if isinstance(body, Register):
            return self._register(message, body, addr, now)
        client = self.clients[message.device_id]
        if addr[0] != client.ip:
            # Only a REGISTER (with an address token) moves a device: an authenticated
            # request from elsewhere may come from a forged address.
            return Refused(
                RefusalCause.UNKNOWN_DEVICE,
                f"this device is registered at {client.ip}, not {addr[0]}: register again",
            )
        client.last_seen, client.control_address = now, addr
        if isinstance(body, CheckIn):
            for entry in body.content:
                client.content[entry.content_id] = entry
                if 0 < entry.chunk_count <= entry.chunks_done:
                    self.wan_copy.release_lease(client, entry.content_id)
            office, _ = self.office_of(client.ip)
            return CheckInReply(
                self._assignments_digest,
                self._assignments_length,
                self.bad_peers.banned_in(office, now),
            )
        if isinstance(body, ManifestInfo):
            manifest_file = self._manifests.get(body.content_id)
            if manifest_file is None:
                return Refused(
                    RefusalCause.UNKNOWN_CONTENT,
                    f"content {body.content_id.short} is not on this server",
                )
            digest = hashlib.sha256(manifest_file).digest()
            return ManifestReply(body.content_id, digest, len(manifest_file))
        if isinstance(body, Lease):
            lease = self.wan_copy.lease(client, body.content_id, now)
            if isinstance(lease, Refused):  # banned, outside every office: logged once
                self.note_refusal(message.device_id, addr, lease)
            return lease
        if isinstance(body, Peers):
            return PeerList(
                body.content_id, self.wan_copy.office_peers(client, body.content_id, now)
            )
        if isinstance(body, BadPeer):
            self._bad_peer(client, body, now)
            return Noted()
        if isinstance(body, InstallReport):
            return self._install_report(client, body)
        return Refused(RefusalCause.INVALID_REQUEST, f"{type(body).__name__} is not a request")

    def _install_report(self, client: ClientRecord, report: InstallReport) -> ControlBody:
        """Keep a device's install report for the console: only for content assigned to
        it (or, uninstalling, content it reported installing before)."""
        office, _ = self.office_of(client.ip)
        known = report.content_id in client.installs
        if not self.is_assigned(client, report.content_id, office) and not (
            known and report.status in _UNINSTALL_STATES
        ):
            return Refused(
                RefusalCause.NOT_ASSIGNED,
                f"content {report.content_id.short} is not assigned to this device",
            )
        if not known and len(client.installs) >= MAX_INSTALLS_PER_CLIENT:
            return Refused(
                RefusalCause.INVALID_REQUEST,
                f"invalid InstallReport: more than {MAX_INSTALLS_PER_CLIENT} install records",
            )
        # PostgreSQL text holds no NUL; the tail is shown, never run.
        client.installs[report.content_id] = replace(
            report, output_tail=report.output_tail.replace("\x00", "\ufffd")
        )
        return Noted()

    def _admission(self, message: ControlMessage, now: float) -> Refused | None:
        if not self.licence.active and not self.licence.expired:
            return Refused(RefusalCause.NOT_ACTIVATED, self.licence.message)
        body = message.body
        if isinstance(body, Register):
            try:
                check_compatible(Role.SERVER, Role.CLIENT, body.version, self.version)
            except (IncompatibleVersion, InvalidVersion) as error:
                return Refused(RefusalCause.VERSION_UNSUPPORTED, str(error))
        if self.licence.expired and message.device_id not in self.clients:
            # Devices activated before the expiry keep working; no new seat is given.
            return Refused(RefusalCause.LICENCE_EXPIRED, self.licence.message)
        refusal = self.device_refusals.get(message.device_id)
        if refusal is not None:
            return Refused(RefusalCause.NOT_LICENSED, refusal)
        if not isinstance(body, Register) and message.device_id not in self.clients:
            return Refused(
                RefusalCause.UNKNOWN_DEVICE,
                f"device {message.device_id.hex()} is not registered: register first",
            )
        return None

    def _register(
        self, message: ControlMessage, body: Register, addr: Address, now: float
    ) -> ControlBody:
        device_id = message.device_id
        client = self.clients.get(device_id)
        subnet = str(ipaddress.ip_network(f"{addr[0]}/{body.subnet_prefix}", strict=False))
        if client is None:
            refusal = self._admit_new_device(addr, now)
            if refusal is not None:
                self.note_refusal(device_id, addr, refusal)
                return refusal
            client = self.clients[device_id] = ClientRecord(
                device_id, body.hostname, body.version, "", subnet, now, now
            )
            client.last_counter = message.counter
            self._place(client, addr[0])
            self._roster.add(client, self.office_of(addr[0])[0])
        else:
            if client.ip != addr[0] and self.office_of(client.ip) != self.office_of(addr[0]):
                self._roster.mark_stale()  # it moved office: its place is rebuilt
            self._place(client, addr[0])
        if client.public_key != body.public_key:
            client.public_key, client.control_key = body.public_key, None
        client.hostname, client.version, client.subnet = body.hostname, body.version, subnet
        client.last_seen, client.control_address = now, addr
        self.registered.add(device_id)
        office, office_type = self.office_of(addr[0])
        settings = self.settings
        limit = settings.bandwidth.get(office or "", BandwidthLimit())
        return Registered(
            version=self.version,
            office=office or "",
            office_type=office_type,
            checkin_seconds=settings.checkin_seconds,
            discovery_port=settings.discovery_port,
            data_port=settings.data_port,
            background_port=settings.background_port,
            licence_state=LicenceState.OVERAGE if self.licence.seats_over else LicenceState.OK,
            seats_over=self.licence.seats_over,
            alternative_ports=settings.alternative_ports,
            foreground_kbps=limit.foreground_kbps,
            background_kbps=limit.background_kbps,
            max_downloads=limit.max_downloads,
        )

    def _admit_new_device(self, addr: Address, now: float) -> Refused | None:
        """Bounded registry: per source address and overall, new devices are limited."""
        limits = self.settings.limits
        if len(self.clients) >= MAX_CLIENTS:
            return Refused(RefusalCause.RATE_LIMITED, "this server's registry is full")
        if not self._new_devices.allow(addr[0], now):
            return Refused(
                RefusalCause.RATE_LIMITED,
                f"too many new devices from {addr[0]}: at most "
                f"{limits.new_devices_per_address} per {limits.new_device_window:.0f} s",
            )
        if not self._all_new_devices.allow("", now):
            return Refused(RefusalCause.RATE_LIMITED, "too many new devices: try again later")
        return None

    def expire_clients(self, now: float) -> None:
        """Devices not heard from for ``client_expiry`` leave the registry (the shell
        deletes their rows; the console keeps their seat until they are retired)."""
        self._next_sweep = now + EXPIRY_SWEEP
        horizon = now - self.settings.limits.client_expiry
        for device_id in [d for d, client in self.clients.items() if client.last_seen < horizon]:
            client = self.clients.pop(device_id)
            self._roster.remove(device_id)
            if self._device_at.get(client.ip) == device_id:
                del self._device_at[client.ip]
            self.expired.append(device_id)
        self.wan_copy.expire(now)

    # ------------------------------------------------------------- bad peers

    def _bad_peer(self, client: ClientRecord, body: BadPeer, now: float) -> None:
        """Count a report (``BadPeerBook``); a ban revokes the culprit's lease."""
        office, _ = self.office_of(client.ip)
        if office is None or body.peer[0] == client.ip:
            return
        ban = self.bad_peers.report(office, client.device_id, body, now)
        if ban is not None:
            self.banned_to_stop.append(ban.peer_ip)
            culprit = self.client_at(ban.peer_ip)
            if culprit is not None:
                self.wan_copy.revoke(office, culprit.device_id.hex())

    def _place(self, client: ClientRecord, ip: str) -> None:
        if self._device_at.get(client.ip) == client.device_id:
            del self._device_at[client.ip]
        client.ip = ip
        self._device_at[ip] = client.device_id

    def clients_in(self, office: str) -> Iterable[ClientRecord]:
        """The registered clients of ``office``, in the registry's order, without a scan
        of every registered client (``shoal.server.office_roster``)."""
        if self._roster_topology is not self.topology:
            self._roster_topology = self.topology
            self._roster.mark_stale()
        return self._roster.clients_in(office, self.clients, lambda ip: self.office_of(ip)[0])

    def client_at(self, ip: str) -> ClientRecord | None:
        """The registered client at ``ip`` (the last one to register from it)."""
        device_id = self._device_at.get(ip)
        return self.clients.get(device_id) if device_id is not None else None

    def restore_client(self, record: ClientRecord) -> None:
        """A client from the persisted registry (after a restart)."""
        record.control_key = None  # derived again, with this server's key
        if record.device_id in self.clients:
            self._roster.mark_stale()
        self.clients[record.device_id] = record
        self._roster.add(record, self.office_of(record.ip)[0])
        self._device_at[record.ip] = record.device_id

    def may_serve_content(
        self,
        client_ip: str,
        content_id: ContentId,
        now: float,
        chunk_index: int | None = None,
        resumed: bool = False,
    ) -> bool:
        """May the client at ``client_ip`` fetch chunks of ``content_id`` from us now (with
        ``chunk_index``: that chunk, which must be in one of its stripes, or ``resumed``:
        the rest of it, ``WanCopy.may_fetch``)?"""
        client = self.client_at(client_ip)
        if client is None:
            return False
        office, office_type = self.office_of(client_ip)
        if not self.is_assigned(client, content_id, office):
            return False  # issue 13, row 3: only devices the console assigned it to
        if office is None or office_type in (OfficeType.VPN, OfficeType.NONE):
            return office is not None or self.settings.direct_outside_offices
        device = client.device_id.hex()
        return self.wan_copy.may_fetch(office, device, content_id, chunk_index, now, resumed)

    def is_assigned(self, client: ClientRecord, content_id: ContentId, office: str | None) -> bool:
        """Does the current assignment document assign ``content_id`` to this client?"""
        device_hex = client.device_id.hex()
        return any(
            entry_applies(entry, device_hex, office) for entry in self._assigned.get(content_id, ())
        )

    def bytes_done(self, progress: ContentProgress) -> int:
        """Bytes a client holds verified, from its chunk count (last chunk may be short)."""
        manifest = self.manifests.get(progress.content_id)
        if manifest is None:
            return 0
        return min(manifest.size, progress.chunks_done * manifest.chunk_size)

    def download_statistics(
        self,
        clients: Iterable[ClientRecord] | None = None,
        totals: dict[tuple[ContentId, str], tuple[int, int]] | None = None,
    ) -> dict[tuple[ContentId, str], tuple[int, int]]:
        """Bytes from peers and from the server, per (content, office), from check-ins
        (of ``clients``, every registered one by default; added to ``totals``)."""
        totals = {} if totals is None else totals
        for client in self.clients.values() if clients is None else clients:
            office = self.office_of(client.ip)[0] or ""
            for content_id, progress in client.content.items():
                peers, server = totals.get((content_id, office), (0, 0))
                totals[(content_id, office)] = (
                    peers + progress.bytes_from_peers,
                    server + progress.bytes_from_server,
                )
        return totals
