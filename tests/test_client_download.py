"""A download's life: the transition table, every (state, input) pair through the real
``DownloadsMachine``, and a Hypothesis state machine over its inputs."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shoal.assignments import ManifestRef
from shoal.client.blobs import BlobFetcher, ManifestBlob
from shoal.client.config import AgentConfig
from shoal.client.counters import AgentCounters
from shoal.client.disk import PartialsLoaded, perform_disk_effects, perform_writes
from shoal.client.download import (
    DOWNLOAD_TRANSITIONS,
    TERMINAL_DOWNLOAD_STATES,
    Download,
    DownloadInput,
    DownloadState,
    DownloadTransitionError,
)
from shoal.client.downloads import DownloadsMachine, DownloadVerified
from shoal.client.server_origin import HOLD_FIRST
from shoal.client.trust import TrustState
from shoal.core.chunkset import ChunkSet
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest, decode_manifest_file
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey
from shoal.protocol.discovery import PeerAvailable
from shoal.protocol.transfer import (
    ChunkCorrupted,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    ChunkStarted,
    Mode,
    RefusalReason,
    Role,
    TransferEngine,
    TransferTimedOut,
)
from shoal.store.errors import StoreError
from shoal.wire.control import (
    Lease,
    LeaseDecision,
    LeaseReply,
    ManifestInfo,
    ManifestReply,
    OfficeType,
    RefusalCause,
    Refused,
)

SERVER = "10.0.0.2"
PEER = "10.1.0.9"
CHUNK = 65536
CONSOLE_KEY = SigningKey.generate()
PACKAGE = random.Random(5).randbytes(CHUNK + 100)
MANIFEST = pack_bytes(PACKAGE, CHUNK)
MANIFEST_FILE = CONSOLE_KEY.sign(MANIFEST).encode()
MANIFEST_SHA256 = hashlib.sha256(MANIFEST_FILE).digest()
CONTENT_ID = MANIFEST.content_id


def _reachable(transitions: Mapping[Any, Mapping[Any, Any]], start: object) -> set[object]:
    seen, todo = {start}, [start]
    while todo:
        for target in transitions[todo.pop()].values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


# ------------------------------------------------------------------ the table


def test_every_state_is_reachable_and_only_complete_is_terminal() -> None:
    assert _reachable(DOWNLOAD_TRANSITIONS, DownloadState.WAITING_MANIFEST) == set(DownloadState)
    assert {DownloadState.COMPLETE} == TERMINAL_DOWNLOAD_STATES
    for state in DownloadState:  # no dead end: every download can still complete
        assert DownloadState.COMPLETE in _reachable(DOWNLOAD_TRANSITIONS, state)


def test_status_labels_stay_what_users_and_scripts_read() -> None:
    labels = {state.label for state in DownloadState}
    assert labels == {"waiting for manifest", "downloading", "complete"}


# -------------------------------------------------------------- the harness


class _Store:
    """An in-memory cache with the agent's view of ``ContentStore``."""

    def __init__(self) -> None:
        self.manifests: dict[ContentId, Manifest] = {}
        self.chunks: dict[ContentId, ChunkSet] = {}
        self.full = False

    def __contains__(self, content_id: object) -> bool:
        return content_id in self.manifests

    def add(self, manifest_file: bytes, *, pinned: bool = False) -> Any:
        if self.full:
            raise StoreError("cache full (test)")
        manifest = decode_manifest_file(manifest_file).manifest
        self.manifests.setdefault(manifest.content_id, manifest)
        self.chunks.setdefault(manifest.content_id, ChunkSet(manifest.chunk_count))

    def manifest(self, content_id: ContentId) -> Manifest:
        return self.manifests[content_id]

    def verified(self, content_id: ContentId) -> ChunkSet:
        return self.chunks[content_id].copy()

    def verified_count(self, content_id: ContentId) -> int:
        return len(self.chunks[content_id])

    def write_verified_chunks(
        self, content_id: ContentId, chunks: Sequence[tuple[int, bytes]]
    ) -> bool:
        if self.full:
            raise StoreError("disk full (test)")
        held = self.chunks[content_id]
        for chunk_index, data in chunks:
            assert (
                self.manifests[content_id].chunk_hashes[chunk_index]
                == hashlib.sha256(data).digest()
            )
            held.add(chunk_index)
        return held.complete

    def write_partial(self, content_id: ContentId, index: int, offset: int, data: bytes) -> bool:
        return False  # nothing kept: these tests resume from memory

    def read_partials(self, content_id: ContentId) -> dict[int, bytes]:
        return {}

    def drop_partial(self, content_id: ContentId, chunk_index: int) -> None:
        pass

    def pin(self, content_id: ContentId) -> None:
        pass

    def unpin(self, content_id: ContentId) -> None:
        pass


class _Recorder:
    """The control client or discovery machine: records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args))

        return record

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class _Office:
    """What the downloads read of the registration: a Default office that shares."""

    office_type = OfficeType.DEFAULT
    shares = True
    registered = None

    def server_data_address(self, mode: Mode) -> tuple[str, int]:
        return SERVER, 7001 if mode is Mode.BACKGROUND else 7000

    def peer_address(self, ip: str, mode: Mode, discovery_port: int = 0) -> tuple[str, int]:
        return ip, 7001 if mode is Mode.BACKGROUND else 7000


class Harness:
    """A real ``DownloadsMachine`` on fake collaborators and a clock of its own."""

    def __init__(self) -> None:
        self.now = 0.0
        self.store = _Store()
        self.control = _Recorder()
        self.discovery = _Recorder()
        self.engines = {
            mode: TransferEngine(now=self.now) for mode in (Mode.FOREGROUND, Mode.BACKGROUND)
        }
        self.blobs = BlobFetcher(self.engines)
        self.counters = AgentCounters()
        config = AgentConfig(
            device_key=DeviceKey.generate(),
            hostname="test",
            ip="10.1.0.1",
            subnet_prefix=24,
            server=(SERVER, 7002),
            enrollment_token=b"t" * 16,
            trust=TrustState((CONSOLE_KEY.verify_key.raw,)),
        )
        self.machine = DownloadsMachine(
            config,
            self.store,  # type: ignore[arg-type]
            random.Random(1),
            self.counters,
            self.control,  # type: ignore[arg-type]
            self.discovery,  # type: ignore[arg-type]
            self.engines,
            self.office,  # type: ignore[arg-type]
            self.blobs,
        )
        self.verified: list[DownloadVerified] = []
        self.manifest_blob: Any = None

    office = _Office()

    @property
    def download(self) -> Download:
        return self.machine.downloads[CONTENT_ID]

    @property
    def state(self) -> DownloadState:
        return self.download.state

    def tick(self, seconds: float = 0.01) -> None:
        self.now += seconds

    def drain(self) -> None:
        while (event := self.machine.next_event()) is not None:
            self.verified.append(event)

    # What each input is, through the machine's real entry points ------------

    def assign(self) -> None:
        self.machine.apply_assignments({CONTENT_ID: False}, {}, self.now)

    def assign_signed(self, digest: bytes = MANIFEST_SHA256) -> None:
        """Assigned by a document that names the signed manifest's blob."""
        signed = {CONTENT_ID: ManifestRef(digest, len(MANIFEST_FILE))}
        self.machine.apply_assignments({CONTENT_ID: False}, {}, self.now, signed)

    def manifest_located(self) -> None:
        self.machine.on_manifest_reply(
            ManifestReply(CONTENT_ID, hashlib.sha256(MANIFEST_FILE).digest(), len(MANIFEST_FILE)),
            self.now,
        )

    def manifest_arrives(self, data: bytes = MANIFEST_FILE) -> None:
        blob = ManifestBlob(hashlib.sha256(MANIFEST_FILE).digest(), CONTENT_ID)
        self.machine.on_manifest(blob, data, [CONSOLE_KEY.verify_key], self.now)

    def manifest_fetch_fails(self) -> None:
        blob = ManifestBlob(hashlib.sha256(MANIFEST_FILE).digest(), CONTENT_ID)
        self.machine.on_manifest_failed(blob, self.now)

    def manifest_refused(self) -> None:
        refusal = Refused(RefusalCause.UNKNOWN_CONTENT, "no such content (test)")
        self.machine.on_request_failed(ManifestInfo(CONTENT_ID), refusal, self.now)

    def timer(self) -> None:
        self.tick(10.0)
        self.machine.handle_timer(self.now)

    def lease_answered(self, decision: LeaseDecision = LeaseDecision.GRANTED) -> None:
        self.machine.on_lease(LeaseReply(CONTENT_ID, decision, (SERVER, 7000), 3000), self.now)

    def lease_refused(self) -> None:
        refusal = Refused(RefusalCause.NOT_ASSIGNED, "not assigned (test)")
        self.machine.on_request_failed(Lease(CONTENT_ID), refusal, self.now)

    def schedule(self) -> None:
        """As the agent's poll: the store updates queued (a start's partial files are
        loaded before its first request), then the requests."""
        for result in perform_disk_effects(self.store, self.machine.take_store_updates()):  # type: ignore[arg-type]
            if isinstance(result, PartialsLoaded):
                self.machine.prefixes.loaded(result)
        self.machine.schedule(self.now)

    def requests(self) -> list[tuple[int, tuple[str, int], int]]:
        return [(rid, peer, index) for rid, (peer, index) in self.download.requests.items()]

    def deliver(self, request_id: int, peer: tuple[str, int], chunk_index: int) -> None:
        data = PACKAGE[chunk_index * CHUNK : (chunk_index + 1) * CHUNK]
        event = ChunkReceived(peer, request_id, CONTENT_ID, chunk_index, data)
        self.machine.on_outcome(Mode.FOREGROUND, event, self.now)

    def write(self) -> None:
        for written in perform_writes(self.store, self.machine.take_disk_writes()):  # type: ignore[arg-type]
            self.machine.chunk_written(written, self.now)
        self.drain()

    def all_chunks_held(self) -> None:
        """A peer holding everything appears; every chunk asked of it arrives, is written."""
        if self.download.transferring:
            self.machine.on_peer_available(
                PeerAvailable(PEER, CONTENT_ID, ChunkSet.full(MANIFEST.chunk_count)), self.now
            )
        for _ in range(MANIFEST.chunk_count + 1):
            if not self.download.transferring:
                break
            self.schedule()
            for request_id, peer, index in self.requests():
                self.deliver(request_id, peer, index)
            self.write()

    # The way to each state -------------------------------------------------

    def drive_to(self, state: DownloadState) -> None:
        self.assign()
        assert self.state is DownloadState.ASKING_MANIFEST
        if state is DownloadState.ASKING_MANIFEST:
            return
        if state is DownloadState.WAITING_MANIFEST:
            self.manifest_refused()
            return
        self.manifest_located()
        if state is DownloadState.FETCHING_MANIFEST:
            return
        self.manifest_arrives()
        assert self.state is DownloadState.LEASING  # the lease is asked at once
        if state is DownloadState.LEASING:
            return
        self.lease_answered()
        if state is DownloadState.DOWNLOADING:
            return
        self.all_chunks_held()
        assert self.state is DownloadState.COMPLETE


# What makes each input happen: the machine's entry points (remote inputs, or the
# agent's own decisions such as the timer); each either takes the table's move or
# leaves the state as it is.
ENTRY_POINTS: dict[DownloadInput, list[Callable[[Harness], None]]] = {
    DownloadInput.MANIFEST_ASKED: [
        lambda h: h.machine.on_request_failed(ManifestInfo(CONTENT_ID), None, h.now)
    ],
    DownloadInput.MANIFEST_LOCATED: [Harness.manifest_located],
    DownloadInput.MANIFEST_SIGNED: [Harness.assign_signed],
    DownloadInput.MANIFEST_UNAVAILABLE: [
        Harness.manifest_refused,
        lambda h: h.manifest_arrives(b"not a manifest"),
    ],
    DownloadInput.MANIFEST_STORED: [Harness.manifest_arrives],
    DownloadInput.LEASE_ASKED: [Harness.timer],
    DownloadInput.LEASE_ANSWERED: [Harness.lease_answered, Harness.lease_refused],
    DownloadInput.ALL_CHUNKS_HELD: [Harness.all_chunks_held],
}
# Where an entry point takes more than one move at once, what it ends in.
CHAINED = {
    # Unanswered manifest request: given up (UNAVAILABLE), asked again (ASKED).
    (DownloadState.ASKING_MANIFEST, DownloadInput.MANIFEST_ASKED): DownloadState.ASKING_MANIFEST,
    # A stored manifest starts the download, which asks for its lease at once.
    (DownloadState.WAITING_MANIFEST, DownloadInput.MANIFEST_STORED): DownloadState.LEASING,
    (DownloadState.FETCHING_MANIFEST, DownloadInput.MANIFEST_STORED): DownloadState.LEASING,
}


@pytest.mark.parametrize("state", list(DownloadState), ids=lambda s: s.name)
@pytest.mark.parametrize("event", list(DownloadInput), ids=lambda e: e.name)
def test_every_state_and_input_pair(state: DownloadState, event: DownloadInput) -> None:
    expected = DOWNLOAD_TRANSITIONS[state].get(event)
    # The table itself: a move it lacks raises, and leaves the download as it was.
    record = Download(CONTENT_ID, False, 0.0, state=state)
    if expected is None:
        with pytest.raises(DownloadTransitionError):
            record.advance(event)
        assert record.state is state
    else:
        assert record.advance(event) is expected
    # The machine: each entry point for the input takes the table's move, or none.
    outcomes = set()
    for entry in ENTRY_POINTS[event]:
        harness = Harness()
        harness.drive_to(state)
        assert harness.state is state
        entry(harness)
        outcomes.add(harness.state)
    if (state, event) == (DownloadState.WAITING_MANIFEST, DownloadInput.MANIFEST_ASKED):
        # Taken when a new assignment creates the download (WAITING) and asks at once,
        # with its lease in the same round trip. A download whose manifest was refused
        # is not asked again before a restart.
        harness = Harness()
        harness.assign()
        assert harness.control.names() == ["manifest_info", "lease"]
        outcomes.add(harness.state)
    if (state, event) == (DownloadState.WAITING_MANIFEST, DownloadInput.MANIFEST_SIGNED):
        # Taken when a new assignment's document names the manifest's blob: fetched at
        # once, the server is not asked where it is (one round trip, not two).
        harness = Harness()
        harness.assign_signed()
        assert harness.control.names() == ["lease"]
        outcomes.add(harness.state)
    if (state, event) == (DownloadState.WAITING_MANIFEST, DownloadInput.MANIFEST_STORED):
        # Taken when a new assignment finds its manifest already in the cache.
        harness = Harness()
        harness.store.add(MANIFEST_FILE)
        harness.assign()
        assert "manifest_info" not in harness.control.names()
        outcomes.add(harness.state)
    if expected is None:
        assert outcomes == {state}, f"{state.name} took {event.name} the table lacks"
    else:
        assert CHAINED.get((state, event), expected) in outcomes


# ------------------------------------------------------------ outcome checks


def test_a_lease_answered_before_the_manifest_makes_the_server_an_origin_at_start() -> None:
    # Asked with the manifest, the lease saves the start a round trip: once the manifest
    # is stored the holder asks the server for its own stripe at once, and not again.
    harness = Harness()
    harness.assign()
    reply = LeaseReply(CONTENT_ID, LeaseDecision.GRANTED, (SERVER, 7000), 3000, 2, 0b10)
    harness.machine.on_lease(reply, harness.now)
    assert harness.state is DownloadState.ASKING_MANIFEST
    harness.tick(0.2)
    harness.manifest_located()
    harness.manifest_arrives()
    assert harness.state is DownloadState.DOWNLOADING
    assert harness.control.names().count("lease") == 1
    harness.schedule()
    assert [(peer, index) for _, peer, index in harness.requests()] == [((SERVER, 7000), 1)]
    # Renewed before it lapses, counted from when the server answered.
    assert harness.download.lease_due < 3.0


def test_a_server_busy_refusal_holds_that_chunk_back_and_leaves_the_rest_coming() -> None:
    # A BUSY from the server is about one chunk: not in our stripes any more, or already
    # delivered into the office (the delivery ledger holds it back for a lease period).
    # Before, every refusal withdrew every request to the server, the chunk it was
    # sending included, and the lease answer had the refused chunk asked again at once:
    # where the ledger kept refusing it, that repeated every round trip (~360 copies of
    # one chunk cut off in an estate-faults run). Now that chunk alone is held back, the
    # server's other answers come on, and nothing is asked twice.
    harness = Harness()
    harness.assign()
    harness.manifest_located()
    harness.manifest_arrives()
    harness.lease_answered()
    harness.schedule()
    asked = harness.requests()
    assert sorted(index for _, _, index in asked) == [0, 1]
    assert {peer for _, peer, _ in asked} == {(SERVER, 7000)}
    (refused_id, server, refused_index), *others = asked
    harness.machine.on_outcome(
        Mode.FOREGROUND,
        ChunkRefused(server, refused_id, CONTENT_ID, refused_index, RefusalReason.BUSY),
        harness.now,
    )
    assert harness.requests() == others  # still coming, not cut off
    live = harness.engines[Mode.FOREGROUND]._receiver.downloads
    assert all(request_id in live for request_id, _, _ in others)
    harness.machine.handle_timer(harness.now)
    assert harness.control.names()[-1] == "lease"  # our stripes may have moved
    harness.tick(0.05)
    harness.lease_answered()
    harness.schedule()
    assert harness.requests() == others  # the refused chunk not asked again at once
    harness.tick(HOLD_FIRST)
    harness.machine.handle_timer(harness.now)
    harness.schedule()
    again = sorted(index for _, _, index in harness.requests())
    assert again == [0, 1]  # asked again once its hold is over; the other not twice


def test_a_lease_answer_that_lapsed_before_the_manifest_is_asked_for_again() -> None:
    # An early answer is applied only while it is valid: a holder must not fetch from
    # the server on a lease the office may have given to another client meanwhile.
    harness = Harness()
    harness.assign()
    reply = LeaseReply(CONTENT_ID, LeaseDecision.GRANTED, (SERVER, 7000), 3000, 2, 0b10)
    harness.machine.on_lease(reply, harness.now)
    harness.tick(3.5)
    harness.manifest_located()
    harness.manifest_arrives()
    assert harness.state is DownloadState.LEASING
    assert harness.control.names().count("lease") == 2
    harness.schedule()
    assert harness.requests() == []


def test_a_verified_download_is_reported_once_and_asks_for_nothing_more() -> None:
    harness = Harness()
    harness.drive_to(DownloadState.COMPLETE)
    assert harness.verified == [DownloadVerified(CONTENT_ID, harness.now)]
    assert harness.download.completed_at == harness.now
    assert not harness.download.requests
    assert ("stop_search", (CONTENT_ID,)) in harness.discovery.calls
    harness.timer()
    harness.schedule()
    harness.lease_answered()  # late: dropped and counted
    assert harness.state is DownloadState.COMPLETE
    assert harness.counters.stale_answers == 1
    assert not harness.download.requests


def test_a_manifest_the_cache_cannot_take_waits_for_the_manifest() -> None:
    harness = Harness()
    harness.drive_to(DownloadState.FETCHING_MANIFEST)
    harness.store.full = True
    harness.manifest_arrives()
    assert harness.state is DownloadState.WAITING_MANIFEST
    assert harness.download.note == "manifest refused: cache full (test)"


# -------------------------------------------------------- the state machine


class DownloadMachineRules(RuleBasedStateMachine):
    """Any order of server answers, peers, chunk outcomes, writes and timers."""

    @initialize(
        start=st.sampled_from(
            [
                DownloadState.ASKING_MANIFEST,
                DownloadState.FETCHING_MANIFEST,
                DownloadState.LEASING,
                DownloadState.DOWNLOADING,
            ]
        )
    )
    def assign(self, start: DownloadState) -> None:
        # Starting part-way too: a refused manifest is never asked again, so runs that
        # begin at the assignment rarely get past it.
        self.harness = Harness()
        self.harness.drive_to(start)

    @rule()
    def manifest_located(self) -> None:
        self.harness.manifest_located()

    @rule(good=st.booleans())
    def manifest_arrives(self, good: bool) -> None:
        self.harness.manifest_arrives(MANIFEST_FILE if good else MANIFEST_FILE[:-1] + b"x")

    @rule()
    def manifest_fetch_fails(self) -> None:
        self.harness.manifest_fetch_fails()

    @rule(answered=st.booleans())
    def manifest_request_fails(self, answered: bool) -> None:
        if answered:
            self.harness.manifest_refused()
        else:
            self.harness.machine.on_request_failed(ManifestInfo(CONTENT_ID), None, self.harness.now)

    @rule(decision=st.sampled_from(LeaseDecision))
    def lease_answered(self, decision: LeaseDecision) -> None:
        self.harness.lease_answered(decision)

    @rule()
    def lease_refused(self) -> None:
        self.harness.lease_refused()

    @rule(seconds=st.floats(0.0, 10.0))
    def time_passes(self, seconds: float) -> None:
        self.harness.tick(seconds)
        self.harness.machine.handle_timer(self.harness.now)

    @rule(chunks=st.sets(st.integers(0, MANIFEST.chunk_count - 1), min_size=1))
    def peer_announces(self, chunks: set[int]) -> None:
        held = ChunkSet(MANIFEST.chunk_count)
        for chunk_index in chunks:
            held.add(chunk_index)
        self.harness.machine.on_peer_available(
            PeerAvailable(PEER, CONTENT_ID, held), self.harness.now
        )

    @rule()
    def schedule(self) -> None:
        self.harness.schedule()

    @precondition(lambda self: bool(self.harness.machine.downloads[CONTENT_ID].requests))
    @rule(data=st.data(), outcome=st.sampled_from(["received", "busy", "not found", "silent"]))
    def request_ends(self, data: st.DataObject, outcome: str) -> None:
        request_id, peer, index = data.draw(st.sampled_from(self.harness.requests()))
        if outcome == "received":
            self.harness.deliver(request_id, peer, index)
            return
        event: ChunkRefused | TransferTimedOut
        if outcome == "silent":
            event = TransferTimedOut(peer, request_id, CONTENT_ID, index, Role.RECEIVER)
        else:
            reason = RefusalReason.BUSY if outcome == "busy" else RefusalReason.NOT_FOUND
            event = ChunkRefused(peer, request_id, CONTENT_ID, index, reason)
        self.harness.machine.on_outcome(Mode.FOREGROUND, event, self.harness.now)

    @rule()
    def every_request_arrives(self) -> None:
        for request_id, peer, index in self.harness.requests():
            self.harness.deliver(request_id, peer, index)

    @rule()
    def round_trip(self) -> None:
        """Ask, receive everything asked for, write it: a round of a healthy swarm."""
        self.harness.schedule()
        self.every_request_arrives()
        self.harness.write()

    @rule(fails=st.booleans())
    def disk_catches_up(self, fails: bool) -> None:
        self.harness.store.full = fails
        self.harness.write()
        self.harness.store.full = False

    @invariant()
    def complete_exactly_when_every_chunk_is_held(self) -> None:
        download = self.harness.download
        held = self.harness.store.chunks.get(CONTENT_ID)
        if download.state is DownloadState.COMPLETE:
            assert held is not None and held.complete
            assert download.completed_at is not None
            assert not download.requests
            assert self.harness.verified == [DownloadVerified(CONTENT_ID, download.completed_at)]
        else:
            assert not self.harness.verified
            assert download.completed_at is None
            # Every chunk written and its write answered: nothing else to wait for.
            assert held is None or not held.complete

    @invariant()
    def chunks_are_asked_for_only_while_transferring(self) -> None:
        download = self.harness.download
        if not download.transferring:
            assert not download.requests
        assert len(download.requests) <= self.harness.machine.config.max_in_flight

    @invariant()
    def a_manifest_exactly_when_past_the_manifest_states(self) -> None:
        download = self.harness.download
        past = download.transferring or download.state is DownloadState.COMPLETE
        assert (download.manifest is not None) == past
        assert (download.picker is not None) == download.transferring or (
            download.state is DownloadState.COMPLETE
        )


DownloadMachineRules.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
test_download_machine_rules = DownloadMachineRules.TestCase


# ---------------------------------------------- the manifest named by the signed document

CLIENT_DATA = ("10.1.0.1", 41000)


def _fetch_manifest_from(harness: Harness, served: bytes) -> list[object]:
    """Run the harness's foreground engine against a server engine that answers every
    request with ``served``; hand each blob's outcome to the downloads as the agent does.
    Returns the receiver's outcomes."""
    client = harness.engines[Mode.FOREGROUND]
    server = TransferEngine(now=harness.now)
    server_address = harness.office.server_data_address(Mode.FOREGROUND)
    outcomes: list[object] = []
    for _ in range(200):
        for data, _addr in client.datagrams_to_send(harness.now):
            server.receive_datagram(data, CLIENT_DATA, harness.now)
        while (asked := server.next_event()) is not None:
            if isinstance(asked, ChunkRequested):
                server.send_chunk(asked.peer, asked.request_id, served, harness.now)
        for data, _addr in server.datagrams_to_send(harness.now):
            client.receive_datagram(data, server_address, harness.now)
        while (event := client.next_event()) is not None:
            if isinstance(event, ChunkStarted):  # the agent hands it to the downloads only
                continue
            blob = harness.blobs.take(Mode.FOREGROUND, getattr(event, "request_id", -1))
            if blob is None:
                continue
            outcomes.append(event)
            assert isinstance(blob, ManifestBlob)
            if isinstance(event, ChunkReceived):
                harness.machine.on_manifest(blob, event.data, [CONSOLE_KEY.verify_key], harness.now)
            else:
                harness.machine.on_manifest_failed(blob, harness.now)
        if outcomes:
            return outcomes
        harness.tick(0.01)
        for engine in (client, server):
            engine.handle_timer(harness.now)
    raise AssertionError("the manifest request never ended")


def test_a_manifest_the_signed_document_names_is_fetched_in_one_round_trip() -> None:
    harness = Harness()
    harness.assign_signed()
    assert harness.state is DownloadState.FETCHING_MANIFEST
    assert "manifest_info" not in harness.control.names()  # no MANIFEST_INFO round trip
    outcomes = _fetch_manifest_from(harness, MANIFEST_FILE)
    assert [type(event) for event in outcomes] == [ChunkReceived]
    assert harness.state is DownloadState.LEASING  # stored: the download started
    assert harness.store.manifest(CONTENT_ID) == MANIFEST


def test_a_manifest_that_does_not_match_the_signed_hash_is_refused_and_nothing_stored() -> None:
    # The server (or whoever answers for it) serves another manifest file for the same
    # content: the same body signed by a key the console never used.
    forged = SigningKey.generate().sign(MANIFEST).encode()
    assert len(forged) == len(MANIFEST_FILE) and forged != MANIFEST_FILE
    harness = Harness()
    harness.assign_signed()
    outcomes = _fetch_manifest_from(harness, forged)
    assert [type(event) for event in outcomes] == [ChunkCorrupted]  # the engine refused it
    assert CONTENT_ID not in harness.store  # nothing stored
    # Asked the server where the manifest is instead: the two-round-trip path.
    assert harness.state is DownloadState.ASKING_MANIFEST
    assert harness.control.names().count("manifest_info") == 1
    assert harness.download.signed_manifest is None


def test_without_the_field_the_server_is_asked_where_the_manifest_is() -> None:
    harness = Harness()
    harness.assign()  # a document from a console that does not name manifests
    assert harness.state is DownloadState.ASKING_MANIFEST
    assert harness.control.names() == ["manifest_info", "lease"]
    harness.manifest_located()
    assert _fetch_manifest_from(harness, MANIFEST_FILE)
    assert harness.state is DownloadState.LEASING


def test_a_peer_back_from_a_crash_is_asked_again_once_it_announces() -> None:
    # A peer that died mid-upload leaves our request to it silent until it times out,
    # which can be after its new process (same cache) has announced what it holds. Sat
    # out for the whole first penalty, its office fetched what it held over the WAN
    # again (estate-faults at 100 MiB: 53 chunks, 0.53 F). Its first silence is now
    # pardoned when it announces again (however many requests it left silent); a
    # second silence sits out as before.
    harness = Harness()
    harness.assign()
    harness.manifest_located()
    harness.manifest_arrives()
    everything = ChunkSet.full(MANIFEST.chunk_count)
    for silence in (1, 2):
        harness.machine.on_peer_available(PeerAvailable(PEER, CONTENT_ID, everything), harness.now)
        harness.schedule()
        asked = harness.requests()
        assert asked and all(peer[0] == PEER for _, peer, _ in asked)
        harness.tick(5.0)
        for request_id, peer, index in asked:
            timed_out = TransferTimedOut(peer, request_id, CONTENT_ID, index, Role.RECEIVER)
            harness.machine.on_outcome(Mode.FOREGROUND, timed_out, harness.now)
        harness.schedule()
        assert harness.requests() == []
        harness.tick(1.0)  # back, and announcing
        harness.machine.on_peer_available(PeerAvailable(PEER, CONTENT_ID, everything), harness.now)
        harness.schedule()
        if silence == 1:
            assert harness.requests(), "a restarted peer is asked again at once"
        else:
            assert harness.requests() == [], "a second silence sits out its penalty"


def test_a_cut_chunk_is_resumed_from_the_next_holder_and_a_bad_resume_blames_nobody() -> None:
    # A request whose sender went away hands back what it held of its chunk; the chunk
    # is asked of the next holder for the rest only. If the resumed chunk then fails its
    # hash, the bad bytes may be our prefix's: it is asked whole, and nobody is banned.
    harness = Harness()
    harness.assign()
    harness.manifest_located()
    harness.manifest_arrives()
    everything = ChunkSet.full(MANIFEST.chunk_count)
    harness.machine.on_peer_available(PeerAvailable(PEER, CONTENT_ID, everything), harness.now)
    harness.schedule()
    [(request_id, peer, index)] = [asked for asked in harness.requests() if asked[2] == 0]
    segment = harness.engines[Mode.FOREGROUND].config.segment_size
    prefix = PACKAGE[index * CHUNK : index * CHUNK + 10 * segment]
    harness.tick(5.0)
    timed_out = TransferTimedOut(peer, request_id, CONTENT_ID, index, Role.RECEIVER, prefix)
    harness.machine.on_outcome(Mode.FOREGROUND, timed_out, harness.now)
    other = "10.1.0.10"
    harness.machine.on_peer_available(PeerAvailable(other, CONTENT_ID, everything), harness.now)
    harness.schedule()
    receiving = harness.engines[Mode.FOREGROUND]._receiver.downloads
    [(resumed_id, resumed_peer)] = [
        (rid, asked) for rid, asked, i in harness.requests() if i == index
    ]
    assert resumed_peer[0] == other and receiving[resumed_id].base == 10 * segment
    corrupted = ChunkCorrupted(resumed_peer, resumed_id, CONTENT_ID, index, resumed=True)
    harness.machine.on_outcome(Mode.FOREGROUND, corrupted, harness.now)
    assert other not in harness.download.banned and harness.counters.peers_banned == 0
    harness.schedule()
    [(whole_id, _)] = [(rid, asked) for rid, asked, i in harness.requests() if i == index]
    assert receiving[whole_id].base == 0  # the prefix is gone: asked whole
