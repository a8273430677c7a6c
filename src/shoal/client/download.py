"""Every state an assigned content's download can be in, and every move, as data.

Theory of operation
-------------------
A download is one assigned content on its way into this client's cache::

    WAITING_MANIFEST --manifest asked--> ASKING_MANIFEST --manifest located--> FETCHING_MANIFEST
       |  |    |                                                                 ^   |
       |  +----|---------manifest signed (the document names its blob)-----------+   |
       |       ^                              |                                      |
       |       +------manifest unavailable----+--------------------------------------+
       |                                                                             |
       +--manifest stored (already cached)--> DOWNLOADING <--manifest stored---------+
                                                  |   ^  |
                                     lease asked  v   |  | lease answered
                                                 LEASING
                                                  |
          DOWNLOADING / LEASING --all chunks held--> COMPLETE

``ASKING_MANIFEST`` waits for the server's ``ManifestReply`` (where the signed manifest
is); ``FETCHING_MANIFEST`` fetches it as a blob and checks the console's signature.
When the signed assignment document names the manifest's blob (``ManifestRef``), the
download skips ``ASKING_MANIFEST`` (one round trip instead of two); if that fetch
fails, it asks the server as before.
``LEASING`` is ``DOWNLOADING`` with a lease request at the server (rendezvous: may this
client pull from the server?); its answer, refusal or silence brings it back.
``COMPLETE`` (every chunk verified by the transfer engine and durably written) is the
one terminal state, and the one place to hook what follows a verified download
(``DownloadsMachine._download_verified``). A content whose assignment is withdrawn is
forgotten, whatever its state.

A pair (state, input) missing from the table is an error. The agent's own calls raise
``DownloadTransitionError`` (a programming mistake); what the server says (a late
answer for a download that moved on) is checked with ``accepts`` first and dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from shoal.assignments import ManifestRef, SealedContent
from shoal.client.partials import Partials
from shoal.client.server_origin import ServerOrigin
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest
from shoal.protocol.swarm import ChunkPicker
from shoal.protocol.transfer import Address, LocalProtocolError, Mode, TransferEngine
from shoal.wire.control import ContentProgress, LeaseDecision


class DownloadTransitionError(LocalProtocolError):
    """The agent moved a download in a way its table does not allow."""


class DownloadState(enum.Enum):
    WAITING_MANIFEST = "waiting for manifest"
    ASKING_MANIFEST = "asking for manifest"
    FETCHING_MANIFEST = "fetching manifest"
    DOWNLOADING = "downloading"
    LEASING = "downloading, lease asked"
    COMPLETE = "complete"

    @property
    def label(self) -> str:
        """What ``shoal client status`` shows (stable across the sub-states)."""
        return _LABELS[self]


class DownloadInput(enum.Enum):
    MANIFEST_ASKED = "manifest asked"
    MANIFEST_LOCATED = "manifest located"
    MANIFEST_SIGNED = "manifest named by the signed document"
    MANIFEST_UNAVAILABLE = "manifest unavailable"
    MANIFEST_STORED = "manifest stored"
    LEASE_ASKED = "lease asked"
    LEASE_ANSWERED = "lease answered"
    ALL_CHUNKS_HELD = "all chunks held"


_S, _I = DownloadState, DownloadInput

DOWNLOAD_TRANSITIONS: dict[DownloadState, dict[DownloadInput, DownloadState]] = {
    _S.WAITING_MANIFEST: {
        _I.MANIFEST_ASKED: _S.ASKING_MANIFEST,
        _I.MANIFEST_SIGNED: _S.FETCHING_MANIFEST,
        _I.MANIFEST_STORED: _S.DOWNLOADING,
    },
    _S.ASKING_MANIFEST: {
        _I.MANIFEST_LOCATED: _S.FETCHING_MANIFEST,
        _I.MANIFEST_UNAVAILABLE: _S.WAITING_MANIFEST,
    },
    _S.FETCHING_MANIFEST: {
        _I.MANIFEST_UNAVAILABLE: _S.WAITING_MANIFEST,
        _I.MANIFEST_STORED: _S.DOWNLOADING,
    },
    _S.DOWNLOADING: {
        _I.LEASE_ASKED: _S.LEASING,
        _I.ALL_CHUNKS_HELD: _S.COMPLETE,
    },
    _S.LEASING: {
        _I.LEASE_ANSWERED: _S.DOWNLOADING,
        _I.ALL_CHUNKS_HELD: _S.COMPLETE,
    },
    _S.COMPLETE: {},
}

TERMINAL_DOWNLOAD_STATES = frozenset(
    state for state, moves in DOWNLOAD_TRANSITIONS.items() if not moves
)
MANIFEST_STATES = frozenset({_S.WAITING_MANIFEST, _S.ASKING_MANIFEST, _S.FETCHING_MANIFEST})
"""No manifest yet: nothing to fetch, serve or report but the content ID."""
TRANSFERRING_STATES = frozenset({_S.DOWNLOADING, _S.LEASING})
"""Chunks are being asked for (the picker exists)."""

_LABELS = {
    state: (
        _S.WAITING_MANIFEST.value
        if state in MANIFEST_STATES
        else _S.DOWNLOADING.value
        if state in TRANSFERRING_STATES
        else state.value
    )
    for state in DownloadState
}


def next_download_state(state: DownloadState, event: DownloadInput) -> DownloadState:
    """The state after ``event``; ``DownloadTransitionError`` when the table has no such move."""
    try:
        return DOWNLOAD_TRANSITIONS[state][event]
    except KeyError:
        raise DownloadTransitionError(
            f"a download {state.value!r} cannot take {event.value!r}"
        ) from None


@dataclass(slots=True)
class Download:
    """One assigned content on its way into the cache: its state, and its bookkeeping."""

    content_id: ContentId
    background: bool
    started_at: float
    state: DownloadState = DownloadState.WAITING_MANIFEST
    manifest: Manifest | None = None
    picker: ChunkPicker[Address] | None = None
    source: LeaseDecision | None = None
    """The server's last lease decision (None: not asked yet)."""
    origin: ServerOrigin = field(default_factory=ServerOrigin)
    """What the server serves us: the lease's chunks, but those it refused lately."""
    lease_due: float = 0.0
    peers_due: float = 0.0
    requests: dict[int, tuple[Address, int]] = field(default_factory=dict)
    """Our chunk requests in flight: request ID -> (peer, chunk index)."""
    bytes_from_peers: int = 0
    bytes_from_server: int = 0
    peers_used: set[str] = field(default_factory=set)
    failures: dict[Address, int] = field(default_factory=dict)
    banned: set[str] = field(default_factory=set)
    completed_at: float | None = None
    note: str = ""
    confidential: SealedContent | None = None
    signed_manifest: ManifestRef | None = None
    """The manifest's blob as the signed document names it; None: ask the server (also
    after a fetch of the named blob failed)."""
    plaintext: str | None = None
    """Where the shell wrote the decrypted package (confidential content)."""

    @property
    def mode(self) -> Mode:
        return Mode.BACKGROUND if self.background else Mode.FOREGROUND

    @property
    def transferring(self) -> bool:
        """Chunks are being asked for (``DOWNLOADING`` or ``LEASING``)."""
        # ``TRANSFERRING_STATES`` by identity: an enum's hash is a Python call (per poll).
        state = self.state
        return state is DownloadState.DOWNLOADING or state is DownloadState.LEASING

    def progress(self, verified_count: Callable[[ContentId], int]) -> ContentProgress:
        """What a check-in reports of it (``verified_count``: the store's count)."""
        done, count = 0, 0
        if self.manifest is not None:
            count = self.manifest.chunk_count
            done = verified_count(self.content_id)
        return ContentProgress(
            self.content_id, done, count, self.bytes_from_peers, self.bytes_from_server
        )

    def next_due(self, wifi: bool) -> float | None:
        """When the downloads' timer must look at it while it transfers (None: only an
        input will): its lease renewal, its peer list (``wifi``), ``next_wake``."""
        if not self.transferring:
            return None
        earliest = self.lease_due if self.state is DownloadState.DOWNLOADING else None
        if wifi and (earliest is None or self.peers_due < earliest):
            earliest = self.peers_due
        wake = self.next_wake()
        if wake is not None and (earliest is None or wake < earliest):
            earliest = wake
        return earliest

    def next_wake(self) -> float | None:
        """When its picker (``ChunkPicker.next_wake``) or a chunk held back from the
        server (``ServerOrigin``) wants a look again; None: only an input will."""
        release = self.origin.next_release()
        wake = self.picker.next_wake() if self.picker is not None else None
        if release is None or (wake is not None and wake < release):
            return wake
        return release

    def accepts(self, event: DownloadInput) -> bool:
        """Does the table have a move for ``event`` from the current state?"""
        return event in DOWNLOAD_TRANSITIONS[self.state]

    def advance(self, event: DownloadInput) -> DownloadState:
        """Take the table's move for ``event`` (raises when it has none)."""
        self.state = next_download_state(self.state, event)
        return self.state

    def chunk_started(
        self, request_id: int, engine: TransferEngine, partials: Partials, now: float
    ) -> None:
        """The first bytes for ``request_id`` came: the chunk's other requests that are
        not being served end (``ChunkPicker.started``)."""
        asked = self.requests.get(request_id)
        if asked is None or self.picker is None:
            return
        peer, chunk_index = asked
        for loser in self.picker.started(chunk_index, peer, now):
            self.end_requests_to(loser, engine, partials, now, [chunk_index])

    def ban_ips(self, ips: frozenset[str]) -> None:
        """Peers banned in the office (by IP): never asked for this content again."""
        self.banned |= ips
        if self.picker is not None:
            for peer in self.picker.peers:
                if peer[0] in ips:
                    self.picker.ban(peer)

    def end_requests_to(
        self,
        peer: Address,
        engine: TransferEngine,
        partials: Partials,
        now: float,
        chunks: list[int] | None = None,
    ) -> list[int]:
        """Cancel our requests to ``peer`` (for ``chunks`` only, if given) in ``engine``
        and forget them, keeping what each held of its chunk in ``partials``; returns
        their chunk indexes (the picker's to release)."""
        ended = []
        for request_id, (asked, index) in list(self.requests.items()):
            if asked == peer and (chunks is None or index in chunks):
                del self.requests[request_id]
                partials.keep(self.content_id, index, engine.cancel(request_id, now))
                ended.append(index)
        return ended


def peer_ip(address: Address) -> str:
    """What ranks a peer for a chunk (``ChunkPicker``'s fan-out): its IP, whatever its port."""
    return address[0]
