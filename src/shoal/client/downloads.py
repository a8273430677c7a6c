"""Downloads: assigned content from manifest to verified cache, from peers and server.

Theory of operation
-------------------
``DownloadsMachine`` keeps one ``Download`` per assigned content; each moves through the
table of ``shoal.client.download`` (manifest asked, fetched and verified; chunks; complete).

* Manifest: the signed manifest as a blob (``shoal.client.blobs``), named by the signed
  document (one round trip) or by the server's answer to ``MANIFEST_INFO`` (two), checked
  against the console keys the document allows, stored pinned (assigned: not evicted).
* Sources: discovery (broadcast in Default offices, server peer lists in WiFi offices)
  feeds the ``ChunkPicker`` with peers and what they hold; the server's LEASE, asked
  with the manifest, decides whether the server is an origin (``shoal.client.lease``).
* Chunks: requested within ``max_in_flight``, the office's bandwidth caps and its limit
  of downloads at once; a verified chunk is announced and served at once, a ``WriteChunk``
  effect, and counts once written (``chunk_written``); nothing new is asked for while
  ``write_backlog_bytes`` wait for the disk (``chunk_writes``). A chunk cut mid-way is
  resumed (``shoal.client.partials``), after a restart too (``prefix_files``).
* Bad peers: one that sends a corrupt chunk is banned for that content and reported to
  the server; peers the server bans in the office are banned for every content.
* Complete: ``_download_verified`` (``DownloadVerified``) is the one way to the end state;
  confidential content comes as ciphertext, decrypted by the shell (``client.confidential``).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from shoal.assignments import ManifestRef, SealedContent
from shoal.client.bandwidth import BandwidthCaps
from shoal.client.blobs import BlobFetcher, ManifestBlob
from shoal.client.busy import peer_refused_busy
from shoal.client.chunk_writes import ChunkWrites
from shoal.client.closed_ports import ClosedPorts
from shoal.client.confidential import PlaintextJobs
from shoal.client.config import AgentConfig, ContentStoreLike
from shoal.client.control import ControlClient
from shoal.client.counters import AgentCounters
from shoal.client.disk import (
    AddManifest,
    ChunkBytes,
    ChunkWritten,
    ManifestAdded,
    PartialsLoaded,
    SetPinned,
    StoreUpdate,
    WriteChunk,
    perform_store_update,
)
from shoal.client.download import MANIFEST_STATES, Download, DownloadInput, DownloadState, peer_ip
from shoal.client.lease import EarlyLeases, apply_lease, release_held, server_refused
from shoal.client.prefix_files import PrefixFiles
from shoal.client.registration import RETRY_SOON, RegistrationMachine
from shoal.client.resume_asks import ask_rests
from shoal.core.chunkset import ChunkSet
from shoal.core.errors import ManifestError
from shoal.core.ids import ContentId
from shoal.core.signing import VerifyKey, verify_manifest_file
from shoal.protocol.discovery import DiscoveryMachine, PeerAvailable, PeerSearching
from shoal.protocol.penalty import PenaltyBox
from shoal.protocol.swarm import ChunkPicker
from shoal.protocol.transfer import (
    Address,
    ChunkCorrupted,
    ChunkReceived,
    ChunkRefused,
    Mode,
    RefusalReason,
    TransferEngine,
    TransferTimedOut,
)
from shoal.wire.control import (
    BadPeer,
    ContentProgress,
    Lease,
    LeaseReply,
    ManifestInfo,
    ManifestReply,
    OfficeType,
    PeerList,
    Peers,
    Refused,
    Registered,
)

PEER_LIST_REFRESH = 5.0

ReceiverOutcome = ChunkReceived | ChunkCorrupted | ChunkRefused | TransferTimedOut
"""How one of our chunk requests ended (``TransferTimedOut`` with ``Role.RECEIVER``)."""
ContentRequest = ManifestInfo | Lease | Peers | BadPeer  # control requests about a content


@dataclass(frozen=True, slots=True)
class DownloadVerified:
    """Every chunk of ``content_id`` is verified and durably in the cache."""

    content_id: ContentId
    at: float


class DownloadsMachine:
    """Every assigned content's download (see the module docstring)."""

    def __init__(
        self,
        config: AgentConfig,
        store: ContentStoreLike,
        rng: random.Random,
        counters: AgentCounters,
        control: ControlClient,
        discovery: DiscoveryMachine,
        engines: dict[Mode, TransferEngine],
        office: RegistrationMachine,
        blobs: BlobFetcher,
        *,
        inline_store: bool = True,
    ) -> None:
        self.config = config
        self.store = store
        self.rng = rng
        self.counters = counters
        self.control = control
        self.discovery = discovery
        self.engines = engines
        self.office = office
        self.blobs = blobs
        self.inline_store = inline_store
        """Run store updates at once (the simulator); False: ``take_store_updates``."""
        self._store_updates: list[StoreUpdate] = []
        self.downloads: dict[ContentId, Download] = {}
        self.banned_peers: frozenset[str] = frozenset()
        """Peers the server banned in this office (reported by several devices)."""
        #: Peers whose chunks never came (crashed, lying): sit out, unless they announce.
        self.suspects: PenaltyBox[Address] = PenaltyBox()
        self._sealed: dict[ContentId, SealedContent] = {}
        self.caps = BandwidthCaps()
        self.writes = ChunkWrites()
        self.plaintext = PlaintextJobs()
        self._events: deque[DownloadVerified] = deque()
        self._early_leases = EarlyLeases()
        self.closed_ports = ClosedPorts()
        self.prefixes = PrefixFiles(self._store_updates)
        self.partials = self.prefixes.partials

    def next_event(self) -> DownloadVerified | None:
        return self._events.popleft() if self._events else None

    # ----------------------------------------------------------------- policy

    def apply_policy(self, reply: Registered, now: float) -> str:
        """The office's bandwidth caps and downloads at once; returns the note to show."""
        return self.caps.apply(reply, now)

    def ban_peers(self, banned: tuple[str, ...]) -> None:
        """The office's banned peers: used for no content from now on."""
        new = frozenset(banned) - self.banned_peers
        self.banned_peers = frozenset(banned)
        if not new:
            return
        for download in self.downloads.values():
            download.ban_ips(new)

    # ------------------------------------------------------------ assignments

    def apply_assignments(
        self,
        assigned: dict[ContentId, bool],
        sealed: dict[ContentId, SealedContent],
        now: float,
        manifests: dict[ContentId, ManifestRef] | None = None,
    ) -> None:
        """Start new assignments, forget withdrawn ones (still cached), give out keys."""
        self._sealed = sealed
        for content_id in [cid for cid in self.downloads if cid not in assigned]:
            self.downloads.pop(content_id)
            self._early_leases.forget(content_id)
            self.prefixes.forget(content_id)
            self.discovery.stop_search(content_id)
            self.discovery.set_holding(content_id, ChunkSet(0), now)  # no longer served
            if content_id in self.store:
                self._update_store(SetPinned(content_id, False), now)  # cached, evictable
        for content_id, background in assigned.items():
            if content_id in self.downloads:
                continue
            download = self.downloads[content_id] = Download(content_id, background, now)
            download.signed_manifest = (manifests or {}).get(content_id)
            download.banned |= self.banned_peers
            if content_id in self.store:
                self._update_store(SetPinned(content_id, True), now)
                self._start(download, now)
            else:
                self._ask_manifest(download, now)
        for download in self.downloads.values():
            had_key = download.confidential is not None and download.confidential.sealed_key
            download.confidential = self._sealed.get(download.content_id)
            if not had_key and download.state not in MANIFEST_STATES:
                self.plaintext.want(download)  # its key came after its download started

    # --------------------------------------------------------------- manifest

    def _ask_manifest(self, download: Download, now: float) -> None:
        signed = download.signed_manifest
        if signed is not None:  # the document names it: no need to ask where it is
            download.advance(DownloadInput.MANIFEST_SIGNED)
            self._fetch_manifest(download.content_id, signed.sha256, signed.length, now)
        else:
            download.advance(DownloadInput.MANIFEST_ASKED)
            self.control.manifest_info(download.content_id, now)
        if download.content_id not in self._early_leases:
            # The lease with the manifest: a holder's first chunk is asked once it is stored.
            self.control.lease(download.content_id, now)

    def on_manifest_reply(self, reply: ManifestReply, now: float) -> None:
        download = self.downloads.get(reply.content_id)
        if download is None or not download.accepts(DownloadInput.MANIFEST_LOCATED):
            self.counters.stale_answers += 1
            return
        download.advance(DownloadInput.MANIFEST_LOCATED)
        self._fetch_manifest(reply.content_id, reply.manifest_sha256, reply.manifest_length, now)

    def _fetch_manifest(self, content_id: ContentId, digest: bytes, size: int, now: float) -> None:
        """The engine checks the bytes against ``digest``: others fail, nothing stored."""
        server = self.office.server_data_address(Mode.FOREGROUND)
        self.blobs.fetch(ManifestBlob(digest, content_id), size, server, now)

    def on_manifest(
        self, blob: ManifestBlob, data: bytes, manifest_keys: list[VerifyKey], now: float
    ) -> None:
        """The manifest's bytes arrived (their hash checked): check its signature, keep it."""
        download = self.downloads.get(blob.content_id)
        if download is None or download.state is not DownloadState.FETCHING_MANIFEST:
            return
        try:
            manifest = verify_manifest_file(data, manifest_keys)
            if manifest.content_id != blob.content_id:
                raise ManifestError("manifest is for another content")
        except ManifestError as error:
            self._manifest_refused(download, str(error))
            return
        self._update_store(AddManifest(blob.content_id, data), now)

    def manifest_added(self, added: ManifestAdded, now: float) -> None:
        """The answer to an ``AddManifest``: the download starts, or waits (cache full)."""
        download = self.downloads.get(added.add.content_id)
        if download is None or download.state is not DownloadState.FETCHING_MANIFEST:
            return  # withdrawn meanwhile (the entry stays in the cache)
        if added.error:
            self._manifest_refused(download, added.error)
            return
        self._start(download, now)

    def _manifest_refused(self, download: Download, reason: str) -> None:
        download.note = f"manifest refused: {reason}"
        download.advance(DownloadInput.MANIFEST_UNAVAILABLE)

    def _update_store(self, update: StoreUpdate, now: float) -> None:
        if not self.inline_store:
            self._store_updates.append(update)
            return
        added = perform_store_update(self.store, update)
        if isinstance(added, ManifestAdded):
            self.manifest_added(added, now)

    def has_disk_effects(self) -> bool:
        """Whether ``take_store_updates`` or ``take_disk_writes`` has something."""
        return bool(self._store_updates) or self.writes.has_queued()

    def partials_loaded(self, loaded: PartialsLoaded) -> None:
        """A restart's prefixes: asked the rest of (the server too: ``resume_asks``)."""
        self.prefixes.loaded(loaded)
        ask_rests(self.downloads.get(loaded.content_id), self.partials, self.office)

    def take_store_updates(self) -> list[StoreUpdate]:
        """Manifests to add, pins to set and partial files, by the shell off the event
        loop, before the chunk writes (``shoal.client.disk``, ``prefix_files``)."""
        updates, self._store_updates[:] = self._store_updates[:], []  # ``prefixes`` shares it
        return updates

    def on_manifest_failed(self, blob: ManifestBlob, now: float) -> None:
        """The manifest's fetch failed (refused, timed out, corrupt): ask the server."""
        download = self.downloads.get(blob.content_id)
        if download is None or download.state is not DownloadState.FETCHING_MANIFEST:
            return
        download.signed_manifest = None  # the server's copy may differ (signed again)
        download.advance(DownloadInput.MANIFEST_UNAVAILABLE)
        self._ask_manifest(download, now)

    # ------------------------------------------------------------------ start

    def _start(self, download: Download, now: float) -> None:
        manifest = self.store.manifest(download.content_id)
        download.manifest = manifest
        download.advance(DownloadInput.MANIFEST_STORED)
        self.plaintext.want(download)
        have = self.store.verified(download.content_id)
        if self.office.shares and have:
            # Peers of the office hear of assigned content only (``may_serve``).
            self.discovery.set_holding(download.content_id, have, now)
        if have.complete:
            self._download_verified(download, now)
            return
        self.prefixes.load(download.content_id)  # a restart's prefixes, before any request
        download.picker = ChunkPicker(
            have,
            max_in_flight_per_peer=self.config.per_peer_in_flight,
            rng=self.rng,
            me=(self.config.ip, 0),
            key=peer_ip,
            fanout=self.config.swarm_fanout,
            rate_horizon=self.config.rate_horizon,
        )
        download.lease_due = now
        download.peers_due = now
        early = self._early_leases.take(download.content_id, now)
        if early is not None:
            self._apply_lease(download, *early, now)
        if self.office.office_type is OfficeType.DEFAULT:
            self.discovery.search(download.content_id, now, chunk_count=manifest.chunk_count)
        self.handle_timer(now)

    def _download_verified(self, download: Download, now: float) -> None:
        """The download's one way to its terminal state: every chunk verified and held
        (what follows, installing it, hooks on ``DownloadVerified``)."""
        download.advance(DownloadInput.ALL_CHUNKS_HELD)
        download.completed_at = now
        download.note = "complete"
        self.discovery.stop_search(download.content_id)
        for request_id in list(download.requests):
            self.engines[download.mode].cancel(request_id, now)
        download.requests.clear()
        self._events.append(DownloadVerified(download.content_id, now))

    # --------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        earliest = self.caps.get_timer()  # no list: the agent asks after every poll
        wifi = self.office.office_type is OfficeType.WIFI
        for download in self.downloads.values():
            due = download.next_due(wifi)
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        return earliest

    def handle_timer(self, now: float) -> None:
        self.caps.handle_timer(now)
        wifi = self.office.office_type is OfficeType.WIFI
        for download in self.downloads.values():
            if not download.transferring:
                continue
            if download.state is DownloadState.DOWNLOADING and download.lease_due <= now:
                download.advance(DownloadInput.LEASE_ASKED)
                self.control.lease(download.content_id, now)
            if wifi and download.peers_due <= now:
                download.peers_due = now + PEER_LIST_REFRESH
                self.control.peers(download.content_id, now)
            if download.picker is not None:
                release_held(download, self.office.server_data_address(download.mode), now)
                download.picker.wake(now)  # schedule() asks what the held-back chunks allow

    # ------------------------------------------------------------ the server

    def on_lease(self, reply: LeaseReply, now: float) -> None:
        download = self.downloads.get(reply.content_id)
        if download is not None and download.state in MANIFEST_STATES:
            self._early_leases.keep(reply, now)  # applied by ``_start``
            return
        if download is None or download.picker is None or not download.transferring:
            self.counters.stale_answers += 1
            return
        if download.state is DownloadState.LEASING:
            download.advance(DownloadInput.LEASE_ANSWERED)
        self._apply_lease(download, reply, reply.valid_ms / 1000, now)

    def _apply_lease(self, download: Download, reply: LeaseReply, valid: float, now: float) -> None:
        """The server's answer (``valid`` seconds left of it) decides its role as origin."""
        server = self.office.server_data_address(download.mode)
        renew = self.config.lease_renew_fraction
        released = apply_lease(download, reply, valid, server, renew, now)
        download.end_requests_to(server, self.engines[download.mode], self.partials, now, released)
        ask_rests(download, self.partials, self.office)  # prefixes off the stripes too

    def on_peer_list(self, reply: PeerList, now: float) -> None:
        download = self.downloads.get(reply.content_id)
        if download is not None and download.transferring:
            assert download.manifest is not None
            self.discovery.search(
                reply.content_id, now, [ip for ip, _ in reply.peers], download.manifest.chunk_count
            )

    def on_request_failed(
        self, request: ContentRequest, refused: Refused | None, now: float
    ) -> None:
        """The server refused (``refused``) or never answered a request about a content:
        retry soon (a lease, a peer list) or now (a manifest it did not answer)."""
        download = self.downloads.get(request.content_id)
        if download is None:
            return
        if refused is not None:
            download.note = refused.message
        if isinstance(request, Lease) and download.state is DownloadState.LEASING:
            download.advance(DownloadInput.LEASE_ANSWERED)
        download.lease_due = now + RETRY_SOON
        if isinstance(request, ManifestInfo) and download.state is DownloadState.ASKING_MANIFEST:
            download.advance(DownloadInput.MANIFEST_UNAVAILABLE)
            if refused is None:
                self._ask_manifest(download, now)

    # ------------------------------------------------------------------ peers

    def on_peer_available(self, event: PeerAvailable, now: float) -> None:
        download = self.downloads.get(event.content_id)
        if download is None or download.picker is None or download.manifest is None:
            return
        if event.chunks.count != download.manifest.chunk_count or event.peer in download.banned:
            return
        address = self.office.peer_address(event.peer, download.mode, event.port)
        if self.suspects.penalised(address, now) and not self.suspects.pardon_first(address, now):
            return
        self.closed_ports.heard(address, self.downloads.values(), now)
        download.picker.peer_has(address, event.chunks)

    def on_peer_searching(self, event: PeerSearching, now: float) -> None:
        """A peer of the office searches for the content too: the picker serves the
        downloaders that hold nothing first (``ChunkPicker.peer_searching``)."""
        download = self.downloads.get(event.content_id)
        if download is None or download.picker is None or event.peer in download.banned:
            return
        address = self.office.peer_address(event.peer, download.mode, event.port)
        if not self.suspects.penalised(address, now):
            self.closed_ports.heard(address, self.downloads.values(), now)
            download.picker.peer_searching(address, now)

    def peer_speaks_other_versions(self, peer: Address, note: str) -> None:
        """A peer refused our protocol version: nobody asks it for anything."""
        self.note_all(note)
        for affected in self.downloads.values():
            if affected.picker is not None:
                affected.picker.peer_gone(peer)

    def note_all(self, note: str) -> None:
        for download in self.downloads.values():
            if download.transferring:
                download.note = note

    # ---------------------------------------------------------------- requests

    def schedule(self, now: float) -> None:
        """Requests for the downloads allowed to run now (the office's policy caps them)."""
        if self.writes.backlog_bytes >= self.config.write_backlog_bytes:
            return  # back-pressure: the disk is behind; ``chunk_written`` polls again
        registered = self.office.registered
        limit = registered.max_downloads if registered else 0
        active = [d for d in self.downloads.values() if d.transferring]
        if not limit:  # the common case (this runs after every poll)
            for download in active:
                self._schedule_requests(download, now)
            return
        for queued in active[limit:]:
            if not queued.requests:
                queued.note = f"queued: the office allows {limit} downloads at once"
        active = [d for d in active if d.requests] + [d for d in active if not d.requests]
        for download in active[:limit]:
            self._schedule_requests(download, now)

    def _schedule_requests(self, download: Download, now: float) -> None:
        picker, manifest, mode = download.picker, download.manifest, download.mode
        assert picker is not None and manifest is not None
        affordable = self.caps.affordable(mode, manifest.chunk_size, now)
        if picker.nothing_to_ask(now) or download.content_id in self.prefixes.loading:
            return  # the common case: this runs after every input
        engine = self.engines[mode]
        in_flight = sum(len(d.requests) for d in self.downloads.values() if d.mode is mode)
        limit = self.config.max_in_flight - in_flight
        if affordable is not None:
            limit = min(limit, affordable)
        for peer, chunk_index in picker.next_requests(limit, now):
            self.caps.spend(mode, manifest.chunk_length(chunk_index), now)
            request_id = engine.request_chunk(
                peer,
                download.content_id,
                chunk_index,
                manifest.chunk_length(chunk_index),
                manifest.chunk_hashes[chunk_index],
                mode,
                now,
                self.partials.take(download.content_id, chunk_index),
            )
            download.requests[request_id] = (peer, chunk_index)

    def on_outcome(self, mode: Mode, event: ReceiverOutcome, now: float) -> None:
        """One of our chunk requests ended: received, corrupt, refused or unanswered."""
        download = self.downloads.get(event.content_id)
        if download is None or event.request_id not in download.requests:
            return
        peer, chunk_index = download.requests.pop(event.request_id)
        assert download.picker is not None
        server = self.office.server_data_address(download.mode)
        if isinstance(event, ChunkReceived):
            self._on_chunk(download, peer, chunk_index, event.data, now)
        elif isinstance(event, ChunkCorrupted):
            self.counters.bad_chunks += 1
            self.prefixes.chunk_failed(download.content_id, chunk_index)
            if peer == server or event.resumed:  # resumed: the bad bytes may be ours
                download.picker.failed(chunk_index, peer)
                return
            download.banned.add(peer[0])
            download.picker.ban(peer)
            self.counters.peers_banned += 1
            download.note = f"peer {peer[0]} sent a bad chunk: banned for this content"
            self.control.bad_peer(download.content_id, peer, chunk_index, now)
        else:
            download.picker.failed(chunk_index, peer)
            self.partials.keep(download.content_id, chunk_index, event.prefix)
            ask_rests(download, self.partials, self.office)
            refused = event.reason if isinstance(event, ChunkRefused) else None
            busy = refused is RefusalReason.BUSY
            if peer == server or refused is RefusalReason.UNSUPPORTED_VERSION:
                if busy:  # that chunk held back from it a while, the lease asked again
                    server_refused(download, chunk_index, server, now)
                return
            if busy:  # contended or full: asked one chunk at a time, or later
                peer_refused_busy(download.picker, peer, now, self.config, self.rng)
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
                or refused is RefusalReason.NOT_FOUND
                # Never answered at all: maybe a forged discovery answer, not a peer.
                or not self.engines[mode].has_answered(peer)
            ):
                download.picker.peer_gone(peer)
                download.failures.pop(peer, None)

    # ------------------------------------------------------------------- disk

    def _on_chunk(
        self, download: Download, peer: Address, chunk_index: int, data: ChunkBytes, now: float
    ) -> None:
        """A verified chunk: not asked again; announced and served at once; counts once written."""
        assert download.picker is not None
        if peer == self.office.server_data_address(download.mode):
            download.bytes_from_server += len(data)
        else:
            download.bytes_from_peers += len(data)
            download.peers_used.add(peer[0])
            self.discovery.holder_proven(download.content_id, peer[0])
        download.failures.pop(peer, None)
        self.suspects.forgive(peer)
        engine = self.engines[download.mode]
        for loser in download.picker.received(chunk_index, peer, now):
            download.end_requests_to(loser, engine, self.partials, now, [chunk_index])
        self.prefixes.chunk_done(download.content_id, chunk_index)
        self.writes.add(download.content_id, chunk_index, data, peer)
        if self.office.shares and download.manifest is not None:
            self.discovery.chunk_added(
                download.content_id,
                chunk_index,
                download.manifest.chunk_count,
                now,
                new_in_office=peer == self.office.server_data_address(download.mode),
                holders=download.picker.holders(chunk_index),
            )

    def take_disk_writes(self) -> list[WriteChunk]:
        """Verified chunks to store, by the shell off the event loop (``shoal.client.disk``)."""
        return self.writes.take()

    def chunk_written(self, written: ChunkWritten, now: float) -> None:
        """A ``WriteChunk``'s answer: the chunk counts (a store error: wanted, unannounced)."""
        write = written.write
        if not self.writes.answered(write):
            return
        download = self.downloads.get(write.content_id)
        if download is None or download.picker is None or download.manifest is None:
            return  # withdrawn meanwhile (what was written stays in the cache)
        if written.error:
            self.counters.store_errors += 1
            download.note = f"cache error: {written.error}"
            download.picker.lost(write.chunk_index)
            self.discovery.chunk_lost(download.content_id, write.chunk_index, now)
            return
        if written.complete and download.transferring:
            self._download_verified(download, now)

    # ----------------------------------------------------------------- status

    def progress(self, download: Download) -> ContentProgress:
        return download.progress(self.store.verified_count)  # lock-free: on the loop

    def all_progress(self) -> list[ContentProgress]:
        return [self.progress(download) for download in self.downloads.values()]
