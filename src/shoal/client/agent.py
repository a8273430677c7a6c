"""The client agent's brain, without I/O: four machines with one job each, wired here.

Theory of operation
-------------------
``AgentCore`` binds four sans-I/O machines to UDP ports for the shell (or the simulator):
the control client (to the P2P server), discovery (broadcast port), two transfer engines
(foreground and background data ports). After any input, the shell calls ``poll(now)``: the
agent hands each of their events, by type, to the one client machine whose job it is:

==============================  =========================================================
``RegistrationMachine``         registration, check-ins, nudges (``registration.py``)
``AssignmentsMachine``          the signed assignment document, trust (``assignments.py``)
``DownloadsMachine``            each download's life as a table: manifest, leases, peers,
                                chunks, caps, writes (``downloads.py``, ``download.py``)
``ServingMachine``              peers' requests: policy, upload slots, reads (``serving.py``)
==============================  =========================================================

Life of a client::

    HELLO --Certificate (checked against the pinned console key)--> control key
    REGISTER --Registered--> check in every checkin_seconds (jittered), and at once
                             when the server nudges (at most every NUDGE_MIN_INTERVAL)
      CheckInReply(assignments digest) --changed--> fetch the signed document (blob)
        for each assignment: MANIFEST_INFO -> fetch manifest (blob) -> verify -> pin
          download: discovery + LEASE (GRANTED / REDIRECTED / DIRECT)
                    chunks -> verified by the engine (hashed once) -> announced, WriteChunk
                           -> ChunkWritten (off the loop) -> held: reported, served
          every chunk held -> DownloadVerified (``_on_download_verified``)

Disk I/O is effects (``shoal.client.disk``), run off the loop by the shell, inline by the
simulator (``disk_inline``). Restarted, downloads resume from the verified chunks and partial
files (``prefix_files``). Confidential content moves as ciphertext; the installer decrypts it
as it stages it, or the shell off the loop (``take_plaintext_jobs``).
"""

from __future__ import annotations

import random
from typing import Any

from shoal.client.assignments import AssignmentsAccepted, AssignmentsMachine
from shoal.client.blobs import AssignmentsBlob, Blob, BlobFetcher
from shoal.client.confidential import PlaintextJob, plaintext_finished
from shoal.client.config import AgentConfig, ContentStoreLike
from shoal.client.control import (
    CertificateRejected,
    ControlAnswered,
    ControlClient,
    ControlTimedOut,
    Nudged,
    RefusedUnauthenticated,
    ServerCertified,
)
from shoal.client.counters import AgentCounters
from shoal.client.disk import (
    ChunkRead,
    ChunkWritten,
    DiskEffect,
    DiskResult,
    ManifestAdded,
    ReadChunk,
    WriteChunk,
    perform_disk_effects,
)
from shoal.client.download import Download, DownloadState
from shoal.client.downloads import DownloadsMachine, DownloadVerified, ReceiverOutcome
from shoal.client.install import InstallMachine
from shoal.client.registration import RegistrationMachine
from shoal.client.serving import ServingMachine
from shoal.client.trust import TrustState
from shoal.core.ids import ContentId
from shoal.core.signing import VerifyKey
from shoal.protocol.discovery import (
    DiscoveryConfig,
    DiscoveryMachine,
    PeerAvailable,
    PeerSearching,
    PeerVersionRejected,
)
from shoal.protocol.serving import UploadSlots
from shoal.protocol.transfer import (
    Address,
    ChunkDelivered,
    ChunkReceived,
    ChunkRequested,
    ChunkStarted,
    Mode,
    PeerPortClosed,
    RequestCancelled,
    Role,
    TransferConfig,
    TransferEngine,
    TransferTimedOut,
    VersionRejected,
)
from shoal.wire.control import (
    BadPeer,
    CheckInReply,
    ControlBody,
    InstallReport,
    Lease,
    LeaseReply,
    ManifestInfo,
    ManifestReply,
    Noted,
    OfficeType,
    PeerList,
    Peers,
    Refused,
    Registered,
)

__all__ = [
    "AgentConfig",
    "AgentCore",
    "AgentCounters",
    "ContentStoreLike",
    "Download",
    "DownloadState",
    "DownloadVerified",
    "PlaintextJob",
]


class AgentCore:
    """Sans-I/O client agent: the coordinator of its machines (see the module docstring)."""

    def __init__(
        self,
        config: AgentConfig,
        store: ContentStoreLike,
        now: float,
        *,
        rng: random.Random | None = None,
        transfer_config: TransferConfig | None = None,
        disk_inline: bool = True,
        installs: InstallMachine | None = None,
    ) -> None:
        self._config = config
        self.installs = installs or InstallMachine("staging")
        """Installs of the verified contents (``shoal.client.install``): the shell runs
        its commands (``take_commands``) and answers ``command_finished``."""
        self._now = now
        self.store = store
        self.rng = rng or random.Random()
        self.counters = AgentCounters()
        # Microseconds of the clock: a restarted client's counters and query IDs are new.
        start = config.counter_start if config.counter_start is not None else int(now * 1e6)
        self.control = ControlClient(
            server=config.server,
            device_key=config.device_key,
            enrollment_token=config.enrollment_token,
            console_keys=[VerifyKey.from_raw(key) for key in config.trust.console_keys],
            now=now,
            counter_start=start,
            wall_offset=config.wall_offset,
        )
        self.engines = {mode: TransferEngine(config=transfer_config, now=now) for mode in Mode}
        self.discovery = DiscoveryMachine(
            DiscoveryConfig(
                port=config.discovery_port,
                broadcast_address=config.broadcast_address,
                scope=(config.subnet,),
                local_addresses=(config.ip,),
                extra_broadcast_ports=config.extra_broadcast_ports,
                fanout=config.swarm_fanout,
                first_query_id=start & 0xFFFFFFFF or 1,
            ),
            now,
            rng=random.Random(self.rng.random()),
        )
        server_ip, proven = config.server[0], self.discovery.address_proven
        for engine in self.engines.values():  # our server, peers discovery proved: no victims
            engine.trust_peers(lambda ip, now: ip == server_ip or proven(ip, now))
        self.blobs = BlobFetcher(self.engines)
        self.registrar = RegistrationMachine(
            config, self.control, self.rng, lambda: self.downloader.all_progress(), now
        )
        self.assignments = AssignmentsMachine(config, self.control, self.blobs, self.counters)
        self.downloader = DownloadsMachine(
            config,
            store,
            self.rng,
            self.counters,
            self.control,
            self.discovery,
            self.engines,
            self.registrar,
            self.blobs,
        )
        self.serving = ServingMachine(
            config,
            store,
            self.engines,
            self.counters,
            self.may_serve,
            pending=self.downloader.writes.pending,
        )
        self.disk_inline = disk_inline  # (both machines' too)

    # ------------------------------------------------------------ wiring

    @property
    def config(self) -> AgentConfig:
        return self._config

    @config.setter
    def config(self, config: AgentConfig) -> None:
        """Every machine reads the same configuration (tests change it on the fly)."""
        self._config = config
        for machine in (self.registrar, self.assignments, self.downloader, self.serving):
            machine.config = config

    @property
    def disk_inline(self) -> bool:
        """Perform disk effects in ``poll`` (the simulator); False: the shell takes them
        (``take_disk_writes``, ``take_disk_reads``) and answers (``chunk_written``,
        ``chunk_read``)."""
        return self._disk_inline

    @disk_inline.setter
    def disk_inline(self, inline: bool) -> None:
        self._disk_inline = inline
        self.serving.inline_reads = inline
        self.downloader.inline_store = inline

    def bindings(self) -> dict[int, Any]:
        """Port -> sans-I/O machine, for the shell or the simulator."""
        config = self.config
        return {
            config.control_port: self.control,
            config.discovery_port: self.discovery,
            config.data_port: self.engines[Mode.FOREGROUND],
            config.background_port: self.engines[Mode.BACKGROUND],
        }

    # ------------------------------------------------- what the machines know

    @property
    def registration(self) -> Registered | None:
        return self.registrar.registered

    @property
    def refusal(self) -> Refused | None:
        return self.registrar.refusal

    @property
    def server_note(self) -> str:
        return self.registrar.note

    @property
    def office_type(self) -> OfficeType:
        return self.registrar.office_type

    @property
    def shares(self) -> bool:
        """Does this client's office share content peer to peer?"""
        return self.registrar.shares

    def server_data_address(self, mode: Mode) -> Address:
        return self.registrar.server_data_address(mode)

    @property
    def trust(self) -> TrustState:
        """Changes when a document is accepted; the shell saves it (``TrustState.save``)."""
        return self.assignments.trust

    @property
    def document_note(self) -> str:
        return self.assignments.note

    @property
    def downloads(self) -> dict[ContentId, Download]:
        return self.downloader.downloads

    @property
    def banned_peers(self) -> frozenset[str]:
        return self.downloader.banned_peers

    @property
    def uploads(self) -> UploadSlots[tuple[Mode, Address, int], tuple[Mode, ChunkRequested]]:
        return self.serving.uploads

    def may_serve(self, peer_ip: str, content_id: object) -> bool:
        """Serve ``content_id`` to ``peer_ip``? Only in an office that shares, only to a
        peer of this office (its subnet, or a peer the server listed), and only content
        assigned to this client now: the cache's other entries (unassigned, evictable)
        are nobody's business."""
        return (
            self.registrar.shares
            and content_id in self.downloader.downloads
            and peer_ip != self.config.ip
            and self.discovery.in_scope(peer_ip)
        )

    # --------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        earliest = self.registrar.get_timer()
        deadline = self.downloader.get_timer()
        if deadline is not None and (earliest is None or deadline < earliest):
            earliest = deadline
        if self.installs.records:  # (none on most devices most of the time)
            deadline = self.installs.get_timer()
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return earliest

    def handle_timer(self, now: float) -> None:
        self._now = now
        self.registrar.handle_timer(now)
        self.downloader.handle_timer(now)
        self.installs.handle_timer(now)

    # ----------------------------------------------------------------- poll

    def has_events(self) -> bool:
        """Whether a machine holds an event for ``poll``. Nothing else changes what
        ``poll`` decides without a call of its own (the timer, a disk result), so a
        DATA datagram inside a chunk or a pacing timer needs no poll (``shoal.net.pump``)."""
        engines = self.engines  # by mode (the simulator may replace them): no generator
        return (
            self.control.has_events()
            or self.discovery.has_events()
            or engines[Mode.FOREGROUND].has_events()
            or engines[Mode.BACKGROUND].has_events()
        )

    def poll(self, now: float) -> None:
        """Drain every machine's events and hand each to its machine; then schedule."""
        self._now = now
        while (control_event := self.control.next_event()) is not None:
            self._on_control_event(control_event, now)
        while (discovery_event := self.discovery.next_event()) is not None:
            if isinstance(discovery_event, PeerAvailable):
                self.downloader.on_peer_available(discovery_event, now)
            elif isinstance(discovery_event, PeerSearching):
                self.downloader.on_peer_searching(discovery_event, now)
            elif isinstance(discovery_event, PeerVersionRejected):
                self.downloader.note_all(
                    f"peer {discovery_event.peer} speaks protocol versions "
                    f"{discovery_event.min_version}..{discovery_event.max_version} only"
                )
        for mode, engine in self.engines.items():
            while (event := engine.next_event()) is not None:
                self._on_transfer_event(mode, event, now)
        self.downloader.prefixes.note_growth(self.downloads.values(), self.engines)
        # Most polls have no disk work, no reads and no installs: skipped in a look each.
        if self._disk_inline:
            if self.downloader.has_disk_effects():
                for result in perform_disk_effects(self.store, self.take_disk_effects()):
                    self.disk_done(result, now)
            if self.serving.has_pending_reads():
                self.serving.perform_pending_reads(now)
        while (verified := self.downloader.next_event()) is not None:
            self._on_download_verified(verified, now)
        if self.registration is not None and self.installs.records:
            for report in self.installs.take_reports(now):
                self.control.install_report(report, now)
        self.downloader.schedule(now)

    def _on_control_event(self, event: object, now: float) -> None:
        if isinstance(event, ControlAnswered):
            self._on_answer(event.request, event.reply, now)
        elif isinstance(event, ControlTimedOut):
            if isinstance(event.request, InstallReport):
                self.installs.report_lost(event.request)
            offline = self.registrar.on_timed_out(event.request, now)
            if offline is not None:  # the kept registration: go on with the office's peers
                self.downloader.apply_policy(offline, now)
                kept = self.assignments.take_kept(offline.office, now)
                if kept is not None:
                    self._on_assignments_accepted(kept, now)
            if isinstance(event.request, Lease | ManifestInfo | Peers):
                self.downloader.on_request_failed(event.request, None, now)
        elif isinstance(event, Nudged):
            self.registrar.on_nudged(event, self.assignments.digest, now)
        elif isinstance(event, RefusedUnauthenticated):
            self.registrar.on_unauthenticated_refusal(event, now)
        elif isinstance(event, ServerCertified):
            self.registrar.on_server_certified(event)
        elif isinstance(event, CertificateRejected):
            self.registrar.on_certificate_rejected(event)

    def _on_answer(self, request: ControlBody, reply: ControlBody, now: float) -> None:
        if isinstance(reply, Refused):
            about_registration = self.registrar.on_refused(request, reply, now)
            if not about_registration and isinstance(
                request, ManifestInfo | Lease | Peers | BadPeer
            ):
                self.downloader.on_request_failed(request, reply, now)
            return
        self.registrar.on_answered()
        if isinstance(reply, Registered):
            policy_note = self.downloader.apply_policy(reply, now)
            self.registrar.on_registered(reply, policy_note, now)
        elif isinstance(reply, CheckInReply):
            self.downloader.ban_peers(reply.banned)
            server = self.registrar.server_data_address(Mode.FOREGROUND)
            kept = self.assignments.on_check_in_reply(reply, server, self.registrar.office, now)
            if kept is not None:
                self._on_assignments_accepted(kept, now)
        elif isinstance(reply, ManifestReply):
            self.downloader.on_manifest_reply(reply, now)
        elif isinstance(reply, LeaseReply):
            self.downloader.on_lease(reply, now)
        elif isinstance(reply, PeerList):
            self.downloader.on_peer_list(reply, now)
        elif isinstance(request, InstallReport) and isinstance(reply, Noted):
            self.installs.acknowledged(request)

    def _on_transfer_event(self, mode: Mode, event: object, now: float) -> None:
        if isinstance(event, ChunkRequested | ChunkDelivered | RequestCancelled) or (
            isinstance(event, TransferTimedOut) and event.role is Role.SENDER
        ):
            self.serving.on_event(mode, event, now)
        elif isinstance(event, PeerPortClosed):  # its process died: ``ClosedPorts``
            downloader = self.downloader
            server = self.registrar.server_data_address
            downloader.closed_ports.closed(
                event.peer,
                downloader.downloads.values(),
                self.engines,
                server,
                downloader.partials,
                now,
            )
        elif isinstance(event, VersionRejected):
            self.downloader.peer_speaks_other_versions(
                event.peer,
                f"peer {event.peer[0]} speaks protocol versions "
                f"{event.min_version}..{event.max_version} only",
            )
        elif isinstance(event, ChunkStarted):  # a duplicate's other requests may end
            download = self.downloader.downloads.get(event.content_id)
            if download is not None:
                download.chunk_started(
                    event.request_id, self.engines[mode], self.downloader.partials, now
                )
        elif isinstance(event, ReceiverOutcome):
            blob = self.blobs.take(mode, event.request_id)
            if blob is not None:
                self._on_blob(blob, event, now)
            else:
                self.downloader.on_outcome(mode, event, now)

    def _on_blob(self, blob: Blob, outcome: ReceiverOutcome, now: float) -> None:
        # A document or manifest (small): its parsers take bytes.
        received = bytes(outcome.data) if isinstance(outcome, ChunkReceived) else None
        if isinstance(blob, AssignmentsBlob) and received is not None:
            accepted = self.assignments.on_document(blob, received, self.registrar.office, now)
            if accepted is not None:
                self._on_assignments_accepted(accepted, now)
        elif isinstance(blob, AssignmentsBlob):
            self.registrar.check_in_again_soon(now)  # soon asked again, not at the next check-in
        elif received is not None:
            self.downloader.on_manifest(blob, received, self.assignments.manifest_keys, now)
        else:
            self.downloader.on_manifest_failed(blob, now)

    def _on_assignments_accepted(self, accepted: AssignmentsAccepted, now: float) -> None:
        self.installs.assigned(accepted.installs, now)  # the signed specs
        self.downloader.apply_assignments(
            accepted.assigned, accepted.sealed, now, accepted.manifests
        )
        for download in self.downloads.values():  # held before its spec (or key) came
            if download.state is DownloadState.COMPLETE:
                self._verified_for_install(download, now)

    def _on_download_verified(self, verified: DownloadVerified, now: float) -> None:
        """A download reached its end: every chunk verified and durably cached.

        What follows it (install actions) hooks here, once per download.
        """
        self.registrar.check_in_soon(now)  # tell the server (and the console) at once
        download = self.downloads.get(verified.content_id)
        if download is not None:
            self._verified_for_install(download, now)
            self.downloader.plaintext.want(download)  # confidential, no install: decrypt

    def _verified_for_install(self, download: Download, now: float) -> None:
        """A complete download may be installed: a confidential one once its key is
        here, decrypted by the installer as it stages it (``shoal.client.plaintext``)."""
        sealed = download.confidential
        if sealed is None:
            self.installs.verified(download.content_id, None, now)
        elif sealed.sealed_key is not None:
            self.installs.verified(download.content_id, None, now, decrypt=True)

    # ------------------------------------------------------------ the shell

    def take_disk_effects(self) -> list[DiskEffect]:
        """Changes to the cache, in order, for the shell's writer thread: manifests to
        add, pins to set, then verified chunks to store (``shoal.client.disk``)."""
        if not self.downloader.has_disk_effects():
            return []  # (the shell asks after every poll)
        return [*self.downloader.take_store_updates(), *self.downloader.take_disk_writes()]

    def take_disk_writes(self) -> list[WriteChunk]:
        """Only the verified chunks to store (the other effects stay queued)."""
        return self.downloader.take_disk_writes()

    def disk_done(self, result: DiskResult, now: float) -> None:
        """The answer to a ``take_disk_effects`` effect. The shell calls ``poll`` after."""
        if isinstance(result, ChunkWritten):
            self.downloader.chunk_written(result, now)
        elif isinstance(result, ManifestAdded):
            self.downloader.manifest_added(result, now)
        else:  # ``PartialsLoaded``: a restart's prefixes (``shoal.client.prefix_files``)
            self.downloader.partials_loaded(result)

    def chunk_written(self, written: ChunkWritten, now: float) -> None:
        """The answer to a ``WriteChunk``. The shell calls ``poll`` after it."""
        self.downloader.chunk_written(written, now)

    def take_disk_reads(self) -> list[ReadChunk]:
        """Chunks peers asked for, to read by the shell off the event loop."""
        return self.serving.take_disk_reads()

    def chunk_read(self, read: ChunkRead, now: float) -> None:
        """The answer to a ``ReadChunk``. The shell calls ``poll`` after it."""
        self.serving.chunk_read(read, now)

    def idle(self) -> bool:
        """No download is on its way (the shell then gives unused memory back)."""
        return all(d.state is DownloadState.COMPLETE for d in self.downloads.values())

    def take_plaintext_jobs(self) -> list[PlaintextJob]:
        """Complete confidential downloads the shell should decrypt into ``packages/``:
        those with an install record are decrypted by the installer as it stages them."""
        jobs = self.downloader.plaintext.take()
        return [job for job in jobs if job.content_id not in self.installs.records]

    def plaintext_finished(self, job: PlaintextJob, path: str | None, error: str = "") -> None:
        """The shell's answer to a ``PlaintextJob``: where the plaintext is, or why not."""
        plaintext_finished(self.downloader.downloads, job, path, error)

    # --------------------------------------------------------------- status

    def status(self, now: float) -> dict[str, Any]:
        """What ``shoal client status`` shows."""
        registration = self.registration
        downloads = []
        for download in self.downloads.values():
            progress = self.downloader.progress(download)
            size = download.manifest.size if download.manifest else 0
            downloads.append(
                {
                    "content_id": download.content_id.hex,
                    "state": download.state.label,
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
            "trust": self.assignments.status(),
            "downloads": downloads,
            "installs": self.installs.status(
                {
                    d.content_id
                    for d in self.downloads.values()
                    if d.state is not DownloadState.COMPLETE
                }
            ),
            "served": {"chunks": self.counters.chunks_served, "bytes": self.counters.bytes_served},
            "updated_at": now,
        }
