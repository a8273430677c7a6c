"""The P2P server's decisions, without I/O: registry, licensing, rendezvous, blobs.

Theory of operation
-------------------
``handle_control`` takes one authenticated control message from a client and returns
the reply body; ``may_serve_content`` tells the data plane whether a client may fetch
a content's chunks from this server now. Everything else is state fed from the
console link (activation, licence, topology, assignments, manifests) and read back for
reports (the client registry, download statistics).

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
directly.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal import __version__, ports
from shoal.assignments import assigned_entries, entry_applies
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest, decode_manifest_file
from shoal.server.rendezvous import Decision, RendezvousTable
from shoal.topology import OfficeType as TopologyOfficeType
from shoal.topology import Topology
from shoal.versions import IncompatibleVersion, InvalidVersion, Role, check_compatible
from shoal.wire.control import (
    BadPeer,
    CheckIn,
    CheckInReply,
    ContentProgress,
    ControlBody,
    ControlMessage,
    Lease,
    LeaseDecision,
    LeaseReply,
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

Address = tuple[str, int]
MAX_CLIENTS = 100_000
MAX_BAD_PEER_REPORTS = 10_000
_OFFICE_TYPES = {
    TopologyOfficeType.DEFAULT: OfficeType.DEFAULT,
    TopologyOfficeType.WIFI: OfficeType.WIFI,
    TopologyOfficeType.VPN: OfficeType.VPN,
}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What the server tells its clients, and its policies."""

    server_key: bytes
    console_key: bytes
    checkin_seconds: int = 60
    discovery_port: int = ports.DISCOVERY
    data_port: int = ports.FOREGROUND_DATA
    background_port: int = ports.BACKGROUND_DATA
    lease_seconds: float = 10.0
    direct_outside_offices: bool = True
    alternative_ports: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Discovery, control, data, background ports to use when the main ones are taken."""
    bandwidth: Mapping[str, BandwidthLimit] = field(default_factory=dict)
    """Per office name: the console's bandwidth policy, passed on to its clients."""


@dataclass(frozen=True, slots=True)
class BandwidthLimit:
    """An office's caps (0 = none): foreground and background kbit/s, downloads at once."""

    foreground_kbps: int = 0
    background_kbps: int = 0
    max_downloads: int = 0


@dataclass(slots=True)
class ClientRecord:
    """One client as the server knows it (reported to the console)."""

    device_id: bytes
    hostname: str
    version: str
    ip: str
    subnet: str
    first_seen: float
    last_seen: float
    content: dict[ContentId, ContentProgress] = field(default_factory=dict)
    control_address: Address | None = None
    """Where its control datagrams come from (nudges go there); not kept across restarts:
    a restarted server nudges the clients that have spoken to it since."""


@dataclass(frozen=True, slots=True)
class BadPeerReport:
    reporter: bytes
    content_id: ContentId
    peer: Address
    chunk_index: int
    at: float


@dataclass(slots=True)
class LicenceView:
    """The licence as the console last described it."""

    active: bool = False
    expired: bool = False
    seats_over: int = 0
    message: str = "the P2P server is not activated: save the licence key in the console"


class ServerCore:
    """Registry, admission, rendezvous and blobs of one P2P server."""

    def __init__(self, settings: ServerSettings, *, version: str = __version__) -> None:
        self.settings = settings
        self.version = version
        self.topology: Topology | None = None
        self.licence = LicenceView()
        self.device_refusals: dict[bytes, str] = {}
        self.clients: dict[bytes, ClientRecord] = {}
        self._device_at: dict[str, bytes] = {}  # client address -> device ID (data plane)
        self.rendezvous = RendezvousTable(settings.lease_seconds)
        self.bad_peer_reports: list[BadPeerReport] = []
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
        """The client's office name and type by its address (``NONE`` if in no office)."""
        if self.topology is None:
            return None, OfficeType.NONE
        office = self.topology.office_for_address(ip)
        if office is None:
            return None, OfficeType.NONE
        return office.name, _OFFICE_TYPES[office.type]

    def handle_control(self, message: ControlMessage, addr: Address, now: float) -> ControlBody:
        """Decide the reply to one authenticated control message."""
        body = message.body
        refusal = self._admission(message, now)
        if refusal is not None:
            self.refusals_sent[refusal.cause] = self.refusals_sent.get(refusal.cause, 0) + 1
            self.recent_refusals.append((message.device_id, addr, refusal))
            return refusal
        if isinstance(body, Register):
            return self._register(message.device_id, body, addr, now)
        client = self.clients[message.device_id]
        client.last_seen, client.control_address = now, addr
        self._place(client, addr[0])
        if isinstance(body, CheckIn):
            for entry in body.content:
                client.content[entry.content_id] = entry
                if 0 < entry.chunk_count <= entry.chunks_done:
                    self._release_lease(client, entry.content_id)
            return CheckInReply(self._assignments_digest, self._assignments_length)
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
            return self._lease(client, body.content_id, now)
        if isinstance(body, Peers):
            return PeerList(body.content_id, self._office_peers(client, body.content_id, now))
        if isinstance(body, BadPeer):
            if len(self.bad_peer_reports) < MAX_BAD_PEER_REPORTS:
                self.bad_peer_reports.append(
                    BadPeerReport(
                        message.device_id, body.content_id, body.peer, body.chunk_index, now
                    )
                )
            return Noted()
        return Refused(RefusalCause.INVALID_REQUEST, f"{type(body).__name__} is not a request")

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

    def _register(self, device_id: bytes, body: Register, addr: Address, now: float) -> ControlBody:
        client = self.clients.get(device_id)
        subnet = str(ipaddress.ip_network(f"{addr[0]}/{body.subnet_prefix}", strict=False))
        if client is None:
            if len(self.clients) >= MAX_CLIENTS:
                return Refused(RefusalCause.INVALID_REQUEST, "this server's registry is full")
            client = self.clients[device_id] = ClientRecord(
                device_id, body.hostname, body.version, "", subnet, now, now
            )
        client.hostname, client.version, client.subnet = body.hostname, body.version, subnet
        self._place(client, addr[0])
        client.last_seen, client.control_address = now, addr
        office, office_type = self.office_of(addr[0])
        settings = self.settings
        limit = settings.bandwidth.get(office or "", BandwidthLimit())
        return Registered(
            version=self.version,
            office=office or "",
            office_type=office_type,
            console_key=settings.console_key,
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

    def _release_lease(self, client: ClientRecord, content_id: ContentId) -> None:
        """A complete rendezvous point has brought every chunk into the office: its lease
        goes now, not lease_seconds after it falls silent."""
        office, _ = self.office_of(client.ip)
        if office is not None:
            self.rendezvous.release(office, content_id, client.device_id.hex())

    def _lease(self, client: ClientRecord, content_id: ContentId, now: float) -> ControlBody:
        if content_id not in self._manifests:
            return Refused(
                RefusalCause.UNKNOWN_CONTENT, f"content {content_id.short} is not on this server"
            )
        office, office_type = self.office_of(client.ip)
        if office is None or office_type in (OfficeType.VPN, OfficeType.NONE):
            if office is None and not self.settings.direct_outside_offices:
                return Refused(
                    RefusalCause.NOT_ASSIGNED,
                    f"{client.ip} is outside every known network; direct "
                    "download from the server is disabled by policy",
                )
            return LeaseReply(content_id, LeaseDecision.DIRECT, (client.ip, 0), 0)
        answer = self.rendezvous.request(office, content_id, client.device_id.hex(), now)
        valid_ms = int(max(0.0, answer.expires_at - now) * 1000)
        if answer.decision is Decision.GRANTED:
            return LeaseReply(
                content_id, LeaseDecision.GRANTED, (client.ip, self.settings.data_port), valid_ms
            )
        holder = self.clients.get(bytes.fromhex(answer.holder))
        holder_ip = holder.ip if holder is not None else "0.0.0.0"
        return LeaseReply(
            content_id, LeaseDecision.REDIRECTED, (holder_ip, self.settings.data_port), valid_ms
        )

    def _office_peers(
        self, client: ClientRecord, content_id: ContentId, now: float
    ) -> tuple[Address, ...]:
        office, _ = self.office_of(client.ip)
        if office is None:
            return ()
        horizon = now - 3 * self.settings.checkin_seconds
        candidates = [
            other
            for other in self.clients.values()
            if other is not client
            and other.last_seen >= horizon
            and self.office_of(other.ip)[0] == office
        ]
        candidates.sort(key=lambda other: (content_id not in other.content, -other.last_seen))
        return tuple((other.ip, self.settings.discovery_port) for other in candidates[:128])

    def _place(self, client: ClientRecord, ip: str) -> None:
        if self._device_at.get(client.ip) == client.device_id:
            del self._device_at[client.ip]
        client.ip = ip
        self._device_at[ip] = client.device_id

    def client_at(self, ip: str) -> ClientRecord | None:
        """The registered client at ``ip`` (the last one to register from it)."""
        device_id = self._device_at.get(ip)
        return self.clients.get(device_id) if device_id is not None else None

    def restore_client(self, record: ClientRecord) -> None:
        """A client from the persisted registry (after a restart)."""
        self.clients[record.device_id] = record
        self._device_at[record.ip] = record.device_id

    def may_serve_content(self, client_ip: str, content_id: ContentId, now: float) -> bool:
        """May the client at ``client_ip`` fetch chunks of ``content_id`` from us now?"""
        client = self.client_at(client_ip)
        if client is None:
            return False
        office, office_type = self.office_of(client_ip)
        if not self.is_assigned(client, content_id, office):
            return False  # issue 13, row 3: only devices the console assigned it to
        if office is None or office_type in (OfficeType.VPN, OfficeType.NONE):
            return office is not None or self.settings.direct_outside_offices
        return self.rendezvous.holder(office, content_id, now) == client.device_id.hex()

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

    def download_statistics(self) -> dict[tuple[ContentId, str], tuple[int, int]]:
        """Bytes from peers and from the server, per (content, office), from check-ins."""
        totals: dict[tuple[ContentId, str], tuple[int, int]] = {}
        for client in self.clients.values():
            office = self.office_of(client.ip)[0] or ""
            for content_id, progress in client.content.items():
                peers, server = totals.get((content_id, office), (0, 0))
                totals[(content_id, office)] = (
                    peers + progress.bytes_from_peers,
                    server + progress.bytes_from_server,
                )
        return totals
