"""The client agent's brain, without I/O: registration, assignments, swarm downloads.

Theory of operation
-------------------
``AgentCore`` owns four sans-I/O machines, each bound to one UDP port by the shell
(or the simulator): the control client (to the P2P server), discovery (broadcast
port), and two transfer engines (foreground and background data ports). After any
input, the shell calls ``poll(now)``: the agent drains the machines' events, decides,
and leaves datagrams queued in the machines. It also has a timer of its own
(``get_timer``/``handle_timer``) for check-ins, leases and retries.

Life of a client::

    HELLO --Certificate (checked against the pinned console key)--> control key
    REGISTER --Registered--> check in every checkin_seconds (jittered), and at once
                             when the server nudges (at most every NUDGE_MIN_INTERVAL)
      CheckInReply(assignments digest) --changed--> fetch the signed document (blob)
        for each assignment: MANIFEST_INFO -> fetch manifest (blob) -> verify -> pin
          download: discovery (broadcast, or server peer lists in WiFi offices)
                    + LEASE: GRANTED -> the server is an origin of last resort
                             REDIRECTED -> peers only, ask again when it may lapse
                             DIRECT -> the server (VPN office, or in no office)
                    chunks -> verified by the engine (hashed once) -> WriteChunk effect
                           -> ChunkWritten (the shell wrote it off the event loop)
                           -> held: announced to peers, served, reported

Blobs (the assignment document, manifests) are fetched from the server's data port as
single chunks whose hash the server announced, so the transfer engine verifies them;
the console's signature is then checked against the console key pinned at enrollment
(``AgentConfig.trust``, a ``TrustState``): nothing the server or a peer says changes
it. The ``TrustState`` also refuses an older or expired document and follows the
console's key rotations (the shell saves the new state). Peers that serve bad chunks
are banned for that content and reported; peers the server bans in the office
(reported by several devices) are banned for every content.
Downloads resume from the store's verified chunks after a restart.

A confidential content is downloaded, verified and served like any other (it is
ciphertext). Once its download starts and the document holds this device's sealed key,
the agent asks the shell for its plaintext (``take_plaintext_jobs``); the shell
decrypts it off the event loop as the chunks arrive (``shoal.client.plaintext``) and
says how it went (``plaintext_finished``).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from shoal import __version__, ports
from shoal.assignments import AssignmentsInvalid, SealedContent, assignments_for, read_envelope
from shoal.client.control import (
    CertificateRejected,
    ControlAnswered,
    ControlClient,
    ControlTimedOut,
    Nudged,
    RefusedUnauthenticated,
    ServerCertified,
)
from shoal.client.disk import ChunkWritten, WriteChunk, perform_writes
from shoal.client.trust import DocumentRefused, TrustState
from shoal.core.chunkset import ChunkSet
from shoal.core.errors import ManifestError
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest
from shoal.core.signing import VerifyKey, verify_manifest_file
from shoal.protocol.discovery import (
    DiscoveryConfig,
    DiscoveryMachine,
    PeerAvailable,
    PeerVersionRejected,
)
from shoal.protocol.penalty import PenaltyBox
from shoal.protocol.ratelimit import TokenBucket
from shoal.protocol.serving import Admission, UploadSlots, serve_from
from shoal.protocol.swarm import ChunkPicker
from shoal.protocol.transfer import (
    ChunkCorrupted,
    ChunkDelivered,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    LocalProtocolError,
    Mode,
    RefusalReason,
    RequestCancelled,
    Role,
    TransferConfig,
    TransferEngine,
    TransferTimedOut,
    VersionRejected,
)
from shoal.store.content_store import EntryInfo
from shoal.store.errors import StoreError
from shoal.wire.control import (
    CheckIn,
    CheckInReply,
    ContentProgress,
    ControlBody,
    Lease,
    LeaseDecision,
    LeaseReply,
    ManifestInfo,
    ManifestReply,
    OfficeType,
    PeerList,
    Peers,
    RefusalCause,
    Refused,
    Register,
    Registered,
)

Address = tuple[str, int]
MAX_CHECKIN_ENTRIES = 16
RETRY_SOON = 5.0
PEER_LIST_REFRESH = 5.0
NUDGE_MIN_INTERVAL = 1.0


class ContentStoreLike(Protocol):
    """What the agent needs of ``shoal.store.ContentStore``."""

    def __contains__(self, content_id: object) -> bool: ...
    def add(self, manifest_file: bytes, *, pinned: bool = False) -> EntryInfo: ...
    def manifest(self, content_id: ContentId) -> Manifest: ...
    def verified(self, content_id: ContentId) -> ChunkSet: ...
    def info(self, content_id: ContentId) -> EntryInfo: ...
    def entries(self) -> list[EntryInfo]: ...
    def write_chunk(self, content_id: ContentId, chunk_index: int, data: bytes) -> bool: ...
    def write_verified_chunks(
        self, content_id: ContentId, chunks: Sequence[tuple[int, bytes]]
    ) -> bool: ...
    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes: ...
    def pin(self, content_id: ContentId) -> None: ...
    def unpin(self, content_id: ContentId) -> None: ...


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Who this client is and where its server is; ports as installed."""

    device_key: DeviceKey
    """This device's X25519 key: its device ID, and its control key with the server."""
    hostname: str
    ip: str
    subnet_prefix: int
    server: Address
    enrollment_token: bytes
    """From the enrollment bundle: mixed into the control key (never logged)."""
    trust: TrustState
    """The console key(s) pinned at enrollment, and the newest document sequence."""
    control_port: int = ports.CONTROL
    discovery_port: int = ports.DISCOVERY
    data_port: int = ports.FOREGROUND_DATA
    background_port: int = ports.BACKGROUND_DATA
    extra_broadcast_ports: tuple[int, ...] = ()
    """Discovery ports of peers on the other port set (main or alternative)."""
    version: str = __version__
    max_in_flight: int = 16
    write_backlog_bytes: int = 4 << 20
    """No new chunk is asked for while this many received bytes wait for the disk."""
    upload_budget_bytes: int = 8 << 20
    """Chunk bytes held for peers at once; more requests wait (``UploadSlots``)."""
    per_peer_in_flight: int = 4
    swarm_fanout: int = 1
    """Downloaders that fetch a new chunk from its first holder (``ChunkPicker``)."""
    rate_horizon: float = 0.5
    """Requests to one peer: what its measured rate delivers in this many seconds, plus
    one (``ChunkPicker``)."""
    upload_target_seconds: float = 0.5
    """Chunk time the upload slots aim at (``UploadSlots``): a slow uplink serves few
    downloaders at once, each at its full rate."""
    busy_backoff: tuple[float, float] = (0.05, 0.25)
    """Seconds (random in this range) before asking again a peer that refused BUSY."""
    peer_failure_limit: int = 3
    lease_renew_fraction: float = 0.3
    register_retry_seconds: float = 30.0
    checkin_jitter: float = 0.2
    counter_start: int | None = None
    """First control counter (the shell: wall clock in microseconds; default: ``now``)."""
    wall_offset: float | None = None
    """Wall clock minus the agent's clock, to check the expiry of certificates and signed
    documents (None: unchecked)."""

    @property
    def device_id(self) -> bytes:
        return self.device_key.device_id

    @property
    def device_hex(self) -> str:
        return self.device_id.hex()

    @property
    def subnet(self) -> str:
        return str(ipaddress.ip_network(f"{self.ip}/{self.subnet_prefix}", strict=False))

    @property
    def broadcast_address(self) -> str:
        network = ipaddress.ip_network(self.subnet)
        return str(network.broadcast_address)


class DownloadState(StrEnum):
    WAITING_MANIFEST = "waiting for manifest"
    DOWNLOADING = "downloading"
    COMPLETE = "complete"


@dataclass(slots=True)
class Download:
    """One assigned content on its way into the cache."""

    content_id: ContentId
    background: bool
    started_at: float
    state: DownloadState = DownloadState.WAITING_MANIFEST
    manifest: Manifest | None = None
    picker: ChunkPicker[Address] | None = None
    source: LeaseDecision | None = None
    lease_due: float = 0.0
    lease_pending: bool = False
    peers_due: float = 0.0
    manifest_requested: bool = False
    requests: dict[int, tuple[Address, int]] = field(default_factory=dict)
    bytes_from_peers: int = 0
    bytes_from_server: int = 0
    peers_used: set[str] = field(default_factory=set)
    failures: dict[Address, int] = field(default_factory=dict)
    banned: set[str] = field(default_factory=set)
    completed_at: float | None = None
    note: str = ""
    confidential: SealedContent | None = None
    plaintext: str | None = None
    """Where the shell wrote the decrypted package (confidential content)."""

    @property
    def mode(self) -> Mode:
        return Mode.BACKGROUND if self.background else Mode.FOREGROUND


@dataclass(slots=True)
class AgentCounters:
    chunks_served: int = 0
    bytes_served: int = 0
    requests_refused: int = 0
    #: Refused: not a peer of our office, or content not assigned to us (issue 13).
    requests_refused_policy: int = 0
    #: Refused BUSY: every upload slot taken and as many requests waiting (UploadSlots).
    requests_refused_busy: int = 0
    bad_chunks: int = 0
    peers_banned: int = 0
    store_errors: int = 0
    documents_refused: int = 0
    rotations_ignored: int = 0


@dataclass(frozen=True, slots=True)
class PlaintextJob:
    """A confidential download to decrypt as its chunks arrive (by the shell, off the loop)."""

    content_id: ContentId
    sealed: SealedContent


@dataclass(slots=True)
class _BlobRequest:
    kind: str  # "assignments" or "manifest"
    digest: bytes
    content_id: ContentId | None = None


class AgentCore:
    """Sans-I/O client agent (see the module docstring)."""

    def __init__(
        self,
        config: AgentConfig,
        store: ContentStoreLike,
        now: float,
        *,
        rng: random.Random | None = None,
        transfer_config: TransferConfig | None = None,
        disk_inline: bool = True,
    ) -> None:
        self.config = config
        self.disk_inline = disk_inline
        """Perform ``WriteChunk`` effects in ``poll`` (the simulator); False: the shell
        takes them (``take_disk_writes``) and answers ``chunk_written``."""
        self._disk_writes: list[WriteChunk] = []
        self._writing: set[tuple[ContentId, int]] = set()
        self._writing_bytes = 0
        self.trust = config.trust
        """Changes when a document is accepted; the shell saves it (``TrustState.save``)."""
        self.document_note = ""
        self._manifest_keys = [VerifyKey.from_raw(key) for key in config.trust.console_keys]
        self.store = store
        self.rng = rng or random.Random()
        self.counters = AgentCounters()
        self.control = ControlClient(
            server=config.server,
            device_key=config.device_key,
            enrollment_token=config.enrollment_token,
            console_keys=[VerifyKey.from_raw(key) for key in config.trust.console_keys],
            now=now,
            counter_start=(
                config.counter_start if config.counter_start is not None else int(now * 1_000_000)
            ),
            wall_offset=config.wall_offset,
        )
        self.engines = {
            Mode.FOREGROUND: TransferEngine(config=transfer_config, now=now),
            Mode.BACKGROUND: TransferEngine(config=transfer_config, now=now),
        }
        self.discovery = DiscoveryMachine(
            DiscoveryConfig(
                port=config.discovery_port,
                broadcast_address=config.broadcast_address,
                scope=(config.subnet,),
                local_addresses=(config.ip,),
                extra_broadcast_ports=config.extra_broadcast_ports,
            ),
            now,
        )
        self.registration: Registered | None = None
        self.refusal: Refused | None = None
        self.server_note = "registering with the P2P server"
        self.downloads: dict[ContentId, Download] = {}
        self.banned_peers: frozenset[str] = frozenset()
        """Peers the server banned in this office (reported by several devices)."""
        self._assignments_digest: bytes | None = None
        self._sealed: dict[ContentId, SealedContent] = {}
        self._plaintext_jobs: list[PlaintextJob] = []
        self._blobs: dict[tuple[Mode, int], _BlobRequest] = {}
        self._register_due: float | None = now
        self._checkin_due: float | None = None
        self._nudged_at = float("-inf")
        self._limits: dict[Mode, TokenBucket] = {}
        self._bandwidth_due: float | None = None
        #: Peers whose chunks never came (a request timed out: a crashed peer, or one
        #: that announces what it will not send): their announcements are ignored while
        #: they sit out, so they cannot draw requests to a dead end again and again.
        self.suspects: PenaltyBox[Address] = PenaltyBox()
        # One set of slots for both modes: their uploads share one uplink.
        self.uploads: UploadSlots[tuple[Mode, Address, int], tuple[Mode, ChunkRequested]] = (
            UploadSlots(
                target_seconds=config.upload_target_seconds,
                max_bytes=config.upload_budget_bytes,
            )
        )
        self._now = now

    # ------------------------------------------------------------- bindings

    def bindings(self) -> dict[int, Any]:
        """Port -> sans-I/O machine, for the shell or the simulator."""
        config = self.config
        return {
            config.control_port: self.control,
            config.discovery_port: self.discovery,
            config.data_port: self.engines[Mode.FOREGROUND],
            config.background_port: self.engines[Mode.BACKGROUND],
        }

    @property
    def office_type(self) -> OfficeType:
        return self.registration.office_type if self.registration else OfficeType.NONE

    @property
    def shares(self) -> bool:
        """Does this client's office share content peer to peer?"""
        return self.office_type in (OfficeType.DEFAULT, OfficeType.WIFI)

    def server_data_address(self, mode: Mode) -> Address:
        """The server's data port: the one it says it serves on (the main set)."""
        registration = self.registration
        if registration is not None:
            data, background = registration.data_port, registration.background_port
        else:
            data, background = self.config.data_port, self.config.background_port
        return self.config.server[0], background if mode is Mode.BACKGROUND else data

    def _peer_address(self, ip: str, mode: Mode, discovery_port: int = 0) -> Address:
        """A peer's data address: on the console's alternative ports when its discovery
        datagrams come from the alternative discovery port, else on the main ports."""
        data, background = self.config.data_port, self.config.background_port
        registration = self.registration
        if registration is not None:
            alternative = registration.alternative_ports
            if alternative[0] and discovery_port == alternative[0]:
                data, background = alternative[2], alternative[3]
            elif discovery_port == registration.discovery_port:
                data, background = registration.data_port, registration.background_port
        return ip, background if mode is Mode.BACKGROUND else data

    # --------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        deadlines = [self._register_due, self._checkin_due, self._bandwidth_due]
        for download in self.downloads.values():
            if download.state is DownloadState.DOWNLOADING:
                if not download.lease_pending:
                    deadlines.append(download.lease_due)
                if self.office_type is OfficeType.WIFI:
                    deadlines.append(download.peers_due)
                if download.picker is not None:
                    deadlines.append(download.picker.next_wake())
        return min((deadline for deadline in deadlines if deadline is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self._bandwidth_due is not None and self._bandwidth_due <= now:
            self._bandwidth_due = None  # poll() schedules the requests the cap held back
        if self._register_due is not None and self._register_due <= now:
            self._register_due = None
            self.control.register(
                self.config.version, self.config.hostname, self.config.subnet_prefix, now
            )
        if self._checkin_due is not None and self._checkin_due <= now:
            self._check_in(now)
        for download in self.downloads.values():
            if download.state is not DownloadState.DOWNLOADING:
                continue
            if not download.lease_pending and download.lease_due <= now:
                download.lease_pending = True
                self.control.lease(download.content_id, now)
            if self.office_type is OfficeType.WIFI and download.peers_due <= now:
                download.peers_due = now + PEER_LIST_REFRESH
                self.control.peers(download.content_id, now)
            if download.picker is not None:
                download.picker.wake(now)  # poll() asks what the held-back chunks allow

    def _check_in(self, now: float) -> None:
        assert self.registration is not None
        progress = [self._progress(download) for download in self.downloads.values()]
        for start in range(0, max(len(progress), 1), MAX_CHECKIN_ENTRIES):
            self.control.check_in(progress[start : start + MAX_CHECKIN_ENTRIES], now)
        interval = self.registration.checkin_seconds
        jitter = self.config.checkin_jitter
        self._checkin_due = now + interval * self.rng.uniform(1 - jitter, 1 + jitter)

    def _progress(self, download: Download) -> ContentProgress:
        done, count = 0, 0
        if download.manifest is not None:
            count = download.manifest.chunk_count
            done = len(self.store.verified(download.content_id))
        return ContentProgress(
            download.content_id, done, count, download.bytes_from_peers, download.bytes_from_server
        )

    # ----------------------------------------------------------------- poll

    def poll(self, now: float) -> None:
        """Drain every machine's events and act on them; then schedule requests."""
        self._now = now
        while (control_event := self.control.next_event()) is not None:
            if isinstance(control_event, ControlAnswered):
                self._on_answer(control_event.request, control_event.reply, now)
            elif isinstance(control_event, ControlTimedOut):
                self._on_control_timeout(control_event.request, now)
            elif isinstance(control_event, Nudged):
                self._on_nudged(control_event, now)
            elif isinstance(control_event, RefusedUnauthenticated):
                self._on_unauthenticated_refusal(control_event, now)
            elif isinstance(control_event, ServerCertified):
                certified = control_event.certificate
                self.server_note = (
                    f"P2P server {certified.name or certified.address} certified by the console"
                )
            elif isinstance(control_event, CertificateRejected):
                self.server_note = (
                    f"refused a P2P server certificate: {control_event.reason} (is another "
                    "device answering for the server? was this device enrolled with this "
                    "console?)"
                )
        while (discovery_event := self.discovery.next_event()) is not None:
            if isinstance(discovery_event, PeerAvailable):
                self._on_peer_available(discovery_event, now)
            elif isinstance(discovery_event, PeerVersionRejected):
                self._note_all(
                    f"peer {discovery_event.peer} speaks protocol versions "
                    f"{discovery_event.min_version}..{discovery_event.max_version} only"
                )
        for mode, engine in self.engines.items():
            while (event := engine.next_event()) is not None:
                self._on_transfer_event(mode, engine, event, now)
        if self.disk_inline and self._disk_writes:
            for written in perform_writes(self.store, self.take_disk_writes()):
                self.chunk_written(written, now)
        self._schedule_all(now)

    def _schedule_all(self, now: float) -> None:
        """Requests for the downloads allowed to run now (the office's policy caps them)."""
        if self._writing_bytes >= self.config.write_backlog_bytes:
            return  # back-pressure: the disk is behind; ``chunk_written`` polls again
        active = [d for d in self.downloads.values() if d.state is DownloadState.DOWNLOADING]
        limit = self.registration.max_downloads if self.registration else 0
        if limit:
            for queued in active[limit:]:
                if not queued.requests:
                    queued.note = f"queued: the office allows {limit} downloads at once"
            active = [d for d in active if d.requests] + [d for d in active if not d.requests]
            active = active[:limit]
        for download in active:
            self._schedule_requests(download, now)

    # --------------------------------------------------------- control replies

    def _on_answer(self, request: ControlBody, reply: ControlBody, now: float) -> None:
        if isinstance(reply, Refused):
            self._on_refused(request, reply, now)
        elif isinstance(reply, Registered):
            self._on_registered(reply, now)
        elif isinstance(reply, CheckInReply):
            self._on_assignments_digest(reply, now)
        elif isinstance(reply, ManifestReply):
            self._fetch_blob(
                _BlobRequest("manifest", reply.manifest_sha256, reply.content_id),
                reply.manifest_length,
                now,
            )
        elif isinstance(reply, LeaseReply):
            self._on_lease(reply, now)
        elif isinstance(reply, PeerList):
            download = self.downloads.get(reply.content_id)
            if download is not None and download.state is DownloadState.DOWNLOADING:
                assert download.manifest is not None
                self.discovery.search(
                    reply.content_id,
                    now,
                    [ip for ip, _ in reply.peers],
                    download.manifest.chunk_count,
                )

    def _on_refused(self, request: ControlBody, reply: Refused, now: float) -> None:
        self.refusal = reply
        self.server_note = f"refused by the P2P server: {reply.message}"
        if reply.cause is RefusalCause.UNKNOWN_DEVICE or isinstance(request, Register):
            if reply.cause is RefusalCause.UNKNOWN_DEVICE:
                self.registration = None
                self._register_due = now
            else:
                self._register_due = now + self.config.register_retry_seconds
            self._checkin_due = None
            return
        content_id = getattr(request, "content_id", None)
        download = self.downloads.get(content_id) if content_id is not None else None
        if download is not None:
            download.note = reply.message
            download.lease_pending = False
            download.lease_due = now + RETRY_SOON
            download.manifest_requested = False

    def _on_unauthenticated_refusal(self, refusal: RefusedUnauthenticated, now: float) -> None:
        """Unproven (anyone can send it): say it, and at most register again, whose
        answer is authenticated; never give up a registration or trust on its word."""
        self.server_note = f"the P2P server (or someone) says: {refusal.message}"
        if refusal.cause is RefusalCause.AUTHENTICATION_FAILED:
            self.server_note += " (check this device's enrollment: `shoal client enroll`)"
        if refusal.cause is RefusalCause.UNKNOWN_DEVICE and self._register_due is None:
            self._register_due = now + (RETRY_SOON if self.registration is not None else 0)

    def _on_control_timeout(self, request: ControlBody, now: float) -> None:
        self.server_note = f"the P2P server at {self.config.server[0]} does not answer"
        if isinstance(request, Register):
            self._register_due = now + RETRY_SOON
        elif isinstance(request, Lease | ManifestInfo | Peers):
            download = self.downloads.get(request.content_id)
            if download is not None:
                download.lease_pending = False
                download.lease_due = now + RETRY_SOON
                download.manifest_requested = False
                if isinstance(request, ManifestInfo):
                    self._request_manifest(download, now)
        elif isinstance(request, CheckIn) and self.registration is not None:
            self._checkin_due = min(self._checkin_due or now + RETRY_SOON, now + RETRY_SOON)

    def _on_registered(self, reply: Registered, now: float) -> None:
        self.registration, self.refusal = reply, None
        office = reply.office or "no office (server downloads only)"
        self.server_note = f"registered with the P2P server, office {office}"
        self._limits = {}
        for mode, kbps in (
            (Mode.FOREGROUND, reply.foreground_kbps),
            (Mode.BACKGROUND, reply.background_kbps),
        ):
            if kbps:
                rate = kbps * 1000 / 8
                self._limits[mode] = TokenBucket(rate, burst=max(rate / 4, 65536), now=now)
        if self._limits or reply.max_downloads:
            self.server_note += (
                f"; office policy: foreground {reply.foreground_kbps or 'unlimited'} kbit/s, "
                f"background {reply.background_kbps or 'unlimited'} kbit/s, "
                f"{reply.max_downloads or 'any number of'} downloads at once"
            )
        ports = (reply.discovery_port, reply.data_port, reply.background_port)
        alternative = reply.alternative_ports
        installed = (
            self.config.discovery_port,
            self.config.data_port,
            self.config.background_port,
        )
        if installed not in (ports, (alternative[0], alternative[2], alternative[3])):
            self.server_note += (
                f"; the console sets ports {ports} (discovery, data, background), "
                f"this client runs on {installed}: restart it to apply"
            )
        self._check_in(now)

    def _on_nudged(self, nudge: Nudged, now: float) -> None:
        """New assignments: check in now rather than at the next check-in.

        Rate-limited, so a replayed nudge costs at most one check-in a second.
        """
        if self.registration is None or nudge.assignments_sha256 == self._assignments_digest:
            return
        if now - self._nudged_at < NUDGE_MIN_INTERVAL:
            return
        self._nudged_at = now
        self._check_in(now)

    def _on_banned(self, banned: tuple[str, ...]) -> None:
        """The office's banned peers: used for no content from now on."""
        new = frozenset(banned) - self.banned_peers
        self.banned_peers = frozenset(banned)
        if not new:
            return
        for download in self.downloads.values():
            download.banned |= new
            if download.picker is None:
                continue
            for peer in download.picker.peers:
                if peer[0] in new:
                    download.picker.ban(peer)

    def _on_assignments_digest(self, reply: CheckInReply, now: float) -> None:
        self._on_banned(reply.banned)
        if reply.assignments_length == 0 or reply.assignments_sha256 == self._assignments_digest:
            return
        if any(blob.kind == "assignments" for blob in self._blobs.values()):
            return
        self._fetch_blob(
            _BlobRequest("assignments", reply.assignments_sha256), reply.assignments_length, now
        )

    def _fetch_blob(self, request: _BlobRequest, length: int, now: float) -> None:
        engine = self.engines[Mode.FOREGROUND]
        request_id = engine.request_chunk(
            self.server_data_address(Mode.FOREGROUND),
            ContentId(request.digest),
            0,
            length,
            request.digest,
            Mode.FOREGROUND,
            now,
        )
        self._blobs[(Mode.FOREGROUND, request_id)] = request

    def _on_blob(self, request: _BlobRequest, data: bytes, now: float) -> None:
        if request.kind == "assignments":
            self._on_assignments_blob(request, data, now)
            return
        assert request.content_id is not None
        download = self.downloads.get(request.content_id)
        if download is None:
            return
        try:
            manifest = verify_manifest_file(data, self._manifest_keys)
            if manifest.content_id != request.content_id:
                raise ManifestError("manifest is for another content")
            self.store.add(data, pinned=True)
        except (ManifestError, StoreError) as error:
            download.note = f"manifest refused: {error}"
            download.manifest_requested = False
            return
        self._start_download(download, now)

    def _on_assignments_blob(self, request: _BlobRequest, data: bytes, now: float) -> None:
        """Accept the document only if it is signed by the current key, fresh and not
        older than the newest accepted; else keep every trusted state as it is."""
        wall = datetime.fromtimestamp(now + (self.control.wall_offset or 0.0), UTC)
        try:
            accepted = self.trust.accept_assignments(read_envelope(data), wall)
            mine = assignments_for(
                accepted.document,
                self.config.device_hex,
                self.registration.office if self.registration else None,
            )
        except DocumentRefused as error:
            self._refuse_document(str(error), error.rotations_ignored)
            return
        except AssignmentsInvalid as error:
            self._refuse_document(str(error), 0)
            return
        self.counters.rotations_ignored += accepted.rotations_ignored
        self.trust = accepted.trust
        document = accepted.document
        self._manifest_keys = self.trust.manifest_keys(document)
        self.document_note = (
            f"assignment document {document.sequence} accepted, "
            f"expires {document.expires.isoformat()}"
        )
        if accepted.rotations_adopted:
            # Server certificates made after the rotation are signed by the new key.
            self.control.console_keys = tuple(
                VerifyKey.from_raw(key) for key in self.trust.console_keys
            )
            self.document_note += f"; console key rotated to {self.trust.console_key.key_id.hex()}"
        self._assignments_digest = request.digest
        self._sealed = {a.content_id: a.confidential for a in mine if a.confidential}
        self._apply_assignments({a.content_id: a.background for a in mine}, now)

    def _refuse_document(self, message: str, rotations_ignored: int) -> None:
        self.counters.documents_refused += 1
        self.counters.rotations_ignored += rotations_ignored
        self.document_note = message

    def _apply_assignments(self, assigned: dict[ContentId, bool], now: float) -> None:
        for content_id in [cid for cid in self.downloads if cid not in assigned]:
            self.downloads.pop(content_id)
            self.discovery.stop_search(content_id)
            self.discovery.set_holding(content_id, ChunkSet(0), now)  # no longer served
            if content_id in self.store:
                self.store.unpin(content_id)  # kept in the cache, evictable
        for content_id, background in assigned.items():
            if content_id in self.downloads:
                continue
            download = self.downloads[content_id] = Download(content_id, background, now)
            download.banned |= self.banned_peers
            if content_id in self.store:
                self.store.pin(content_id)
                self._start_download(download, now)
            else:
                self._request_manifest(download, now)
        for download in self.downloads.values():
            had_key = download.confidential is not None and download.confidential.sealed_key
            download.confidential = self._sealed.get(download.content_id)
            if not had_key and download.state is not DownloadState.WAITING_MANIFEST:
                self._want_plaintext(download)  # its key came after its download started

    def _request_manifest(self, download: Download, now: float) -> None:
        if not download.manifest_requested:
            download.manifest_requested = True
            self.control.manifest_info(download.content_id, now)

    # ------------------------------------------------------------- downloads

    def _start_download(self, download: Download, now: float) -> None:
        manifest = self.store.manifest(download.content_id)
        download.manifest = manifest
        self._want_plaintext(download)
        have = self.store.verified(download.content_id)
        if self.shares and have:
            # Peers of the office hear of assigned content only (``may_serve``).
            self.discovery.set_holding(download.content_id, have, now)
        if have.complete:
            self._complete(download, now)
            return
        download.state = DownloadState.DOWNLOADING
        download.picker = ChunkPicker(
            have,
            max_in_flight_per_peer=self.config.per_peer_in_flight,
            rng=self.rng,
            me=(self.config.ip, 0),
            key=_peer_ip,
            fanout=self.config.swarm_fanout,
            rate_horizon=self.config.rate_horizon,
        )
        download.lease_due = now
        download.peers_due = now
        if self.office_type is OfficeType.DEFAULT:
            self.discovery.search(download.content_id, now, chunk_count=manifest.chunk_count)
        self.handle_timer(now)

    def _on_lease(self, reply: LeaseReply, now: float) -> None:
        download = self.downloads.get(reply.content_id)
        if download is None or download.picker is None:
            return
        download.lease_pending = False
        download.source = reply.decision
        server = self.server_data_address(download.mode)
        full = ChunkSet.full(download.picker.have.count)
        valid = reply.valid_ms / 1000
        if reply.decision is LeaseDecision.REDIRECTED:
            for chunk_index in download.picker.peer_gone(server):
                self._cancel_to(download, server, chunk_index, now)
            download.lease_due = now + max(valid, 1.0)
            download.note = f"rendezvous point of the office: {reply.holder[0]}"
            return
        if server not in download.picker.peers:
            download.picker.peer_has(server, full, origin=True)
        if reply.decision is LeaseDecision.GRANTED:
            download.lease_due = now + max(valid * self.config.lease_renew_fraction, 0.5)
            download.note = "this client is the office's rendezvous point"
        else:
            download.lease_due = float("inf")
            download.note = "this office does not share: downloading from the server"

    def _on_peer_available(self, event: PeerAvailable, now: float) -> None:
        download = self.downloads.get(event.content_id)
        if download is None or download.picker is None or download.manifest is None:
            return
        if event.chunks.count != download.manifest.chunk_count or event.peer in download.banned:
            return
        address = self._peer_address(event.peer, download.mode, event.port)
        if self.suspects.penalised(address, now):
            return
        download.picker.peer_has(address, event.chunks)

    def _schedule_requests(self, download: Download, now: float) -> None:
        assert download.picker is not None and download.manifest is not None
        engine = self.engines[download.mode]
        in_flight = sum(len(d.requests) for d in self.downloads.values() if d.mode is download.mode)
        limit = self.config.max_in_flight - in_flight
        bucket = self._limits.get(download.mode)
        if bucket is not None:
            limit = min(limit, self._affordable(bucket, download, now))
        for peer, chunk_index in download.picker.next_requests(limit, now):
            if bucket is not None:
                bucket.take(download.manifest.chunk_length(chunk_index), now)
            request_id = engine.request_chunk(
                peer,
                download.content_id,
                chunk_index,
                download.manifest.chunk_length(chunk_index),
                download.manifest.chunk_hashes[chunk_index],
                download.mode,
                now,
            )
            download.requests[request_id] = (peer, chunk_index)

    def _affordable(self, bucket: TokenBucket, download: Download, now: float) -> int:
        """How many chunks the bandwidth cap lets us request now; arms the retry."""
        assert download.manifest is not None
        chunk = download.manifest.chunk_size
        available = bucket.available(now)
        count = int(available // chunk) if available >= chunk else 0
        if count == 0 and available >= min(chunk, bucket.burst):
            count = 1  # a chunk larger than the burst passes from a full bucket
        if count == 0:
            due = bucket.ready_at(chunk, now)
            self._bandwidth_due = min(self._bandwidth_due or due, due)
        return count

    def _cancel_to(self, download: Download, peer: Address, chunk_index: int, now: float) -> None:
        for request_id, (asked, index) in list(download.requests.items()):
            if asked == peer and index == chunk_index:
                del download.requests[request_id]
                self.engines[download.mode].cancel(request_id, now)

    def _complete(self, download: Download, now: float) -> None:
        download.state = DownloadState.COMPLETE
        download.completed_at = now
        download.note = "complete"
        self.discovery.stop_search(download.content_id)
        for request_id in list(download.requests):
            self.engines[download.mode].cancel(request_id, now)
        download.requests.clear()
        self._checkin_due = now  # tell the server (and the console) at once

    def _want_plaintext(self, download: Download) -> None:
        sealed = download.confidential
        if sealed is None:
            return
        if sealed.sealed_key is None:
            download.note = "confidential: waiting for this device's content key"
            return
        self._plaintext_jobs.append(PlaintextJob(download.content_id, sealed))

    def take_plaintext_jobs(self) -> list[PlaintextJob]:
        """Confidential downloads the shell should decrypt (as their chunks arrive)."""
        jobs, self._plaintext_jobs = self._plaintext_jobs, []
        return jobs

    def plaintext_finished(self, job: PlaintextJob, path: str | None, error: str = "") -> None:
        """The shell's answer to a ``PlaintextJob``: where the plaintext is, or why not."""
        download = self.downloads.get(job.content_id)
        if download is None or download.confidential is None:
            return  # withdrawn meanwhile
        download.plaintext = path
        download.note = "complete: decrypted" if path else f"cannot decrypt: {error}"

    # ------------------------------------------------------------ transfers

    def _on_transfer_event(
        self, mode: Mode, engine: TransferEngine, event: object, now: float
    ) -> None:
        if isinstance(event, ChunkRequested):
            self._serve(mode, event, now)
            return
        if isinstance(event, ChunkDelivered):
            self.counters.chunks_served += 1
            self._upload_ended(mode, event.peer, event.request_id, now, delivered=True)
            return
        if isinstance(event, RequestCancelled) or (
            isinstance(event, TransferTimedOut) and event.role is Role.SENDER
        ):
            # Sender side: an upload of ours ended, its slot frees. Its request ID is the
            # peer's, not one of our requests (taken for ours, it once dropped our
            # request without telling the picker: a chunk in flight for ever).
            silent = isinstance(event, TransferTimedOut)  # stopped answering: penalised
            self._upload_ended(
                mode, event.peer, event.request_id, now, delivered=False, silent=silent
            )
            return
        if isinstance(event, VersionRejected):
            self._note_all(
                f"peer {event.peer[0]} speaks protocol versions "
                f"{event.min_version}..{event.max_version} only"
            )
            for affected in self.downloads.values():
                if affected.picker is not None:
                    affected.picker.peer_gone(event.peer)
            return
        request_id = getattr(event, "request_id", None)
        if request_id is None:
            return
        blob = self._blobs.pop((mode, request_id), None)
        if blob is not None:
            if isinstance(event, ChunkReceived):
                self._on_blob(blob, event.data, now)
            elif blob.kind == "manifest" and blob.content_id in self.downloads:
                self.downloads[blob.content_id].manifest_requested = False
                self._request_manifest(self.downloads[blob.content_id], now)
            return
        content_id: ContentId | None = getattr(event, "content_id", None)
        download = self.downloads.get(content_id) if content_id is not None else None
        if download is None or request_id not in download.requests:
            return
        peer, chunk_index = download.requests.pop(request_id)
        assert download.picker is not None
        if isinstance(event, ChunkReceived):
            self._on_chunk(download, peer, chunk_index, event.data, now)
        elif isinstance(event, ChunkCorrupted):
            self.counters.bad_chunks += 1
            if peer == self.server_data_address(download.mode):
                download.picker.failed(chunk_index, peer)
                return
            download.banned.add(peer[0])
            download.picker.ban(peer)
            self.counters.peers_banned += 1
            download.note = f"peer {peer[0]} sent a bad chunk: banned for this content"
            self.control.bad_peer(download.content_id, peer, chunk_index, now)
        elif isinstance(event, ChunkRefused | TransferTimedOut):
            download.picker.failed(chunk_index, peer)
            busy = isinstance(event, ChunkRefused) and event.reason is RefusalReason.BUSY
            if peer == self.server_data_address(download.mode):
                if busy:
                    download.picker.peer_gone(peer)
                    download.lease_due = now
                return
            if busy:  # its upload slots are full: other holders meanwhile
                download.picker.busy(peer, now + self.rng.uniform(*self.config.busy_backoff))
                return
            if isinstance(event, TransferTimedOut):  # asked, and nothing came: sits out
                self.suspects.penalise(peer, now)
                for affected in self.downloads.values():
                    if affected.picker is not None:
                        affected.picker.peer_gone(peer)
                download.failures.pop(peer, None)
                return
            failures = download.failures[peer] = download.failures.get(peer, 0) + 1
            if (
                failures >= self.config.peer_failure_limit
                or (isinstance(event, ChunkRefused) and event.reason is RefusalReason.NOT_FOUND)
                # Never answered at all: maybe a forged discovery answer, not a peer.
                or not engine.has_answered(peer)
            ):
                download.picker.peer_gone(peer)
                download.failures.pop(peer, None)

    def _on_chunk(
        self, download: Download, peer: Address, chunk_index: int, data: bytes, now: float
    ) -> None:
        """A chunk the engine verified: nobody asks for it again; held once written."""
        assert download.picker is not None
        if peer == self.server_data_address(download.mode):
            download.bytes_from_server += len(data)
        else:
            download.bytes_from_peers += len(data)
            download.peers_used.add(peer[0])
        download.failures.pop(peer, None)
        self.suspects.forgive(peer)
        for loser in download.picker.received(chunk_index, peer, now):
            self._cancel_to(download, loser, chunk_index, now)
        key = (download.content_id, chunk_index)
        if key not in self._writing:
            self._writing.add(key)
            self._writing_bytes += len(data)
            self._disk_writes.append(WriteChunk(download.content_id, chunk_index, data, peer))

    def take_disk_writes(self) -> list[WriteChunk]:
        """Verified chunks to store, by the shell off the event loop (``shoal.client.disk``)."""
        writes, self._disk_writes = self._disk_writes, []
        return writes

    def chunk_written(self, written: ChunkWritten, now: float) -> None:
        """The answer to a ``WriteChunk``: from now on the chunk is held (or, on a store
        error, wanted again). The shell calls ``poll`` after it."""
        write = written.write
        key = (write.content_id, write.chunk_index)
        if key not in self._writing:
            return
        self._writing.discard(key)
        self._writing_bytes -= len(write.data)
        download = self.downloads.get(write.content_id)
        if download is None or download.picker is None or download.manifest is None:
            return  # withdrawn meanwhile (what was written stays in the cache)
        if written.error:
            self.counters.store_errors += 1
            download.note = f"cache error: {written.error}"
            download.picker.lost(write.chunk_index)
            return
        if self.shares:
            self.discovery.chunk_added(
                download.content_id, write.chunk_index, download.manifest.chunk_count, now
            )
        if written.complete and download.state is DownloadState.DOWNLOADING:
            self._complete(download, now)

    def may_serve(self, peer_ip: str, content_id: ContentId) -> bool:
        """Serve ``content_id`` to ``peer_ip``? Only in an office that shares, only to a
        peer of this office (its subnet, or a peer the server listed), and only content
        assigned to this client now: the cache's other entries (unassigned, evictable)
        are nobody's business."""
        return (
            self.shares
            and content_id in self.downloads
            and peer_ip != self.config.ip
            and self.discovery.in_scope(peer_ip)
        )

    def _serve(self, mode: Mode, event: ChunkRequested, now: float) -> None:
        if not self.may_serve(event.peer[0], event.content_id):
            # NOT_FOUND whatever the reason: what we cache is not told to strangers.
            self.engines[mode].refuse_chunk(
                event.peer, event.request_id, RefusalReason.NOT_FOUND, now
            )
            self.counters.requests_refused += 1
            self.counters.requests_refused_policy += 1
            return
        key = (mode, event.peer, event.request_id)
        admission = self.uploads.offer(
            key, (mode, event), now, event.chunk_length, peer=event.peer[0]
        )
        if admission is Admission.START:
            self._serve_now(mode, event, now)
        elif admission is Admission.REFUSE:
            self.engines[mode].refuse_chunk(event.peer, event.request_id, RefusalReason.BUSY, now)
            self.counters.requests_refused += 1
            self.counters.requests_refused_busy += 1

    def _serve_now(self, mode: Mode, event: ChunkRequested, now: float) -> None:
        engine = self.engines[mode]
        try:
            if self.may_serve(event.peer[0], event.content_id):
                sent = serve_from(self.store, engine, event, now)
            else:  # unassigned while it waited for a slot
                engine.refuse_chunk(event.peer, event.request_id, RefusalReason.NOT_FOUND, now)
                sent = 0
        except LocalProtocolError:
            sent = 0  # the request ended while it waited for a slot
        self.counters.bytes_served += sent
        if not sent:
            self.counters.requests_refused += 1
            self._upload_ended(mode, event.peer, event.request_id, now, delivered=False)

    def _upload_ended(
        self,
        mode: Mode,
        peer: Address,
        request_id: int,
        now: float,
        *,
        delivered: bool,
        silent: bool = False,
    ) -> None:
        """An upload ended: start the requests that waited for its slot or its memory."""
        for waiting_mode, waiting in self.uploads.finished(
            (mode, peer, request_id), now, delivered=delivered, silent=silent
        ):
            self._serve_now(waiting_mode, waiting, now)

    def _note_all(self, note: str) -> None:
        for download in self.downloads.values():
            if download.state is DownloadState.DOWNLOADING:
                download.note = note

    # --------------------------------------------------------------- status

    def _trust_status(self) -> dict[str, Any]:
        trust = self.trust
        return {
            "console_key": trust.console_key.key_id.hex(),
            "keys_pinned": len(trust.console_keys),
            "highest_sequence": trust.highest_sequence,
            "document_note": self.document_note,
            "documents_refused": self.counters.documents_refused,
            "rotations_ignored": self.counters.rotations_ignored,
        }

    def status(self, now: float) -> dict[str, Any]:
        """What ``shoal client status`` shows."""
        registration = self.registration
        downloads = []
        for download in self.downloads.values():
            progress = self._progress(download)
            size = download.manifest.size if download.manifest else 0
            downloads.append(
                {
                    "content_id": download.content_id.hex,
                    "state": download.state.value,
                    "mode": "background" if download.background else "foreground",
                    "size": size,
                    "chunks_done": progress.chunks_done,
                    "chunks": progress.chunk_count,
                    "bytes_from_peers": download.bytes_from_peers,
                    "bytes_from_server": download.bytes_from_server,
                    "peers_used": sorted(download.peers_used),
                    "source": download.source.name.lower() if download.source is not None else None,
                    "started_at": download.started_at,
                    "completed_at": download.completed_at,
                    "note": download.note,
                    "confidential": download.confidential is not None,
                    "plaintext": download.plaintext,
                }
            )
        return {
            "device_id": self.config.device_hex,
            "version": self.config.version,
            "server": f"{self.config.server[0]}:{self.config.server[1]}",
            "registered": registration is not None,
            "office": registration.office if registration else None,
            "office_type": self.office_type.name,
            "licence": (
                None
                if registration is None
                else {
                    "state": registration.licence_state.name,
                    "seats_over": registration.seats_over,
                }
            ),
            "refusal": (
                {"cause": self.refusal.cause.name, "message": self.refusal.message}
                if self.refusal
                else None
            ),
            "note": self.server_note,
            "trust": self._trust_status(),
            "downloads": downloads,
            "served": {"chunks": self.counters.chunks_served, "bytes": self.counters.bytes_served},
            "updated_at": now,
        }


def _peer_ip(address: Address) -> str:
    """What ranks a peer for a chunk (``ChunkPicker``'s fan-out): its IP, the same in
    every peer's eyes whatever data port it is reached on."""
    return address[0]
