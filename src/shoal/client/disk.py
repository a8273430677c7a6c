"""The agent's disk I/O as effects: what to write or read, and how it went.

Theory of operation
-------------------
``AgentCore`` does not write to its cache itself. For each chunk the transfer engine
has verified in memory (``ChunkReceived``: hashed once, on receipt), it emits a
``WriteChunk`` effect; whoever runs the agent performs it and hands back a
``ChunkWritten`` event (``AgentCore.chunk_written``). Only then does the chunk count:
the store marks it verified (durably), the server hears of it, and the download may
complete. Discovery announces it, and peers are served its verified bytes from memory,
as soon as the engine verified it (``DownloadsMachine._on_chunk``,
``ChunkWrites.pending``): a relay hop does not wait for the disk. A crash before the
write loses the chunk; a peer that asks the restarted process for it is refused and
asks elsewhere.

Two runners share ``perform_writes``, the one piece of code that turns effects into
events:

* the asyncio shell, ``DiskWorker`` (``shoal.client.disk_worker``): one thread, off the
  event loop, which takes every write queued meanwhile as one batch (one ``fdatasync``
  and one sidecar update per content per batch);
* the simulator and tests (virtual time, deterministic): inline, in ``AgentCore.poll``
  (``AgentCore(..., disk_inline=True)``, the default).

Serving works the same way: for a chunk a peer asked for (and an upload slot took),
the agent emits a ``ReadChunk`` effect; the shell reads it off the event loop (the
store re-checks its hash before it is served) and hands back ``ChunkRead``
(``AgentCore.chunk_read``), which sends it or refuses the request. ``perform_reads`` is
the one piece of code that does it, in a second thread of the shell (so a read does not
wait behind an ``fdatasync``) and inline in the simulator, at the moment of the request.

The agent's other changes to its cache are effects too, run by the same writer thread
in order with the chunk writes (``perform_disk_effects``): ``AddManifest`` (a verified
manifest becomes an entry: the manifest file written and fsynced, the data file
reserved, room made by evicting unpinned content), answered by ``ManifestAdded``; and
``SetPinned`` (an assignment pins its content, a withdrawal unpins it), which needs no
answer.
The received prefixes of chunks in flight go the same way (``shoal.client.prefix_files``):
``WritePartial`` (no answer), ``DropPartial`` (no answer) and ``LoadPartials`` (when a
download starts), answered by ``PartialsLoaded``.

Back-pressure lives in the agent, so it is the same in both: while the bytes of
unanswered ``WriteChunk`` effects reach ``AgentConfig.write_backlog_bytes``, the agent
asks for no new chunk (requests already in flight still land).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shoal.core.errors import ShoalError
from shoal.core.ids import ContentId
from shoal.protocol.serving import ChunkSource as ChunkSource  # re-exported: disk_worker uses it
from shoal.protocol.serving import read_servable
from shoal.protocol.transfer import Address, Mode, RefusalReason

#: A verified chunk's bytes: the transfer engine hands over its receive buffer, uncopied.
ChunkBytes = bytes | bytearray


@dataclass(frozen=True, slots=True)
class WriteChunk:
    """Effect: store this chunk, already verified against the manifest (no re-hash)."""

    content_id: ContentId
    chunk_index: int
    data: ChunkBytes
    peer: Address
    """Who sent it (for the agent's accounting when the write fails)."""


@dataclass(frozen=True, slots=True)
class ChunkWritten:
    """Event: a ``WriteChunk`` ran. ``error`` empty: the chunk is durably held, and
    ``complete`` says whether its content is now whole."""

    write: WriteChunk
    complete: bool
    error: str = ""


class VerifiedChunkStore(Protocol):
    """What performing writes needs of ``shoal.store.ContentStore``."""

    def write_verified_chunks(
        self, content_id: ContentId, chunks: Sequence[tuple[int, ChunkBytes]]
    ) -> bool: ...


def perform_writes(store: VerifiedChunkStore, writes: Sequence[WriteChunk]) -> list[ChunkWritten]:
    """Run ``writes`` (a batch: one durable commit per content) and say how each went."""
    by_content: dict[ContentId, list[WriteChunk]] = {}
    for write in writes:
        by_content.setdefault(write.content_id, []).append(write)
    results: list[ChunkWritten] = []
    for content_id, batch in by_content.items():
        try:
            complete = store.write_verified_chunks(
                content_id, [(write.chunk_index, write.data) for write in batch]
            )
        except ShoalError as error:  # StoreError (disk full, removed), a wrong length
            results.extend(ChunkWritten(write, False, str(error)) for write in batch)
        else:
            results.extend(ChunkWritten(write, complete) for write in batch)
    return results


@dataclass(frozen=True, slots=True)
class ReadChunk:
    """Effect: read this verified chunk from the cache (re-hashed) for a peer's request."""

    mode: Mode
    peer: Address
    request_id: int
    content_id: ContentId
    chunk_index: int
    chunk_length: int
    #: From this byte on (a resumed chunk's remainder).
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ChunkRead:
    """Event: a ``ReadChunk`` ran: the chunk's bytes, or why it cannot be served."""

    read: ReadChunk
    data: bytes | memoryview | None
    refusal: RefusalReason = RefusalReason.NOT_FOUND
    """Why not, when ``data`` is None: ``NOT_FOUND`` for content or a chunk not held
    (or gone bad on disk), ``INVALID_REQUEST`` for a length that is not the chunk's."""


def perform_read(store: ChunkSource, read: ReadChunk) -> ChunkRead:
    """Run one ``ReadChunk`` and say how it went."""
    chunk = read_servable(store, read.content_id, read.chunk_index, read.chunk_length, read.offset)
    if isinstance(chunk, RefusalReason):
        return ChunkRead(read, None, chunk)
    return ChunkRead(read, chunk)


def perform_reads(store: ChunkSource, reads: Sequence[ReadChunk]) -> list[ChunkRead]:
    """Run ``reads`` in order (a batch of the shell's reader thread)."""
    return [perform_read(store, read) for read in reads]


@dataclass(frozen=True, slots=True)
class AddManifest:
    """Effect: hold this content (its manifest verified against the console's keys),
    pinned: it is assigned."""

    content_id: ContentId
    manifest_file: bytes


@dataclass(frozen=True, slots=True)
class ManifestAdded:
    """Event: an ``AddManifest`` ran; ``error`` empty: the content is in the cache."""

    add: AddManifest
    error: str = ""


@dataclass(frozen=True, slots=True)
class SetPinned:
    """Effect: protect content from eviction (assigned), or stop protecting it."""

    content_id: ContentId
    pinned: bool


@dataclass(frozen=True, slots=True)
class WritePartial:
    """Effect: these received bytes of a chunk in flight go to its partial file at
    ``offset`` (``shoal.store.partials``; no answer: a refused write is not durable).
    ``data`` is a read-only view of the receive buffer, whose received segments are
    never written again (it keeps the buffer alive until written)."""

    content_id: ContentId
    chunk_index: int
    offset: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class DropPartial:
    """Effect: the chunk failed; its partial file goes (its bytes may be the bad ones)."""

    content_id: ContentId
    chunk_index: int


@dataclass(frozen=True, slots=True)
class LoadPartials:
    """Effect: a download starts; read its chunks' partial files (a restart's prefixes)."""

    content_id: ContentId


@dataclass(frozen=True, slots=True)
class PartialsLoaded:
    """Event: a ``LoadPartials`` ran: untrusted prefixes by chunk index."""

    content_id: ContentId
    prefixes: dict[int, bytes]


PartialEffect = WritePartial | DropPartial | LoadPartials
StoreUpdate = AddManifest | SetPinned | PartialEffect
DiskEffect = WriteChunk | StoreUpdate
DiskResult = ChunkWritten | ManifestAdded | PartialsLoaded


class ManagedStore(VerifiedChunkStore, Protocol):
    """What performing every disk effect needs of ``shoal.store.ContentStore``."""

    def add(self, manifest_file: bytes, *, pinned: bool = False) -> object: ...
    def pin(self, content_id: ContentId) -> None: ...
    def unpin(self, content_id: ContentId) -> None: ...
    def write_partial(
        self, content_id: ContentId, chunk_index: int, offset: int, data: bytes | memoryview
    ) -> bool: ...
    def read_partials(self, content_id: ContentId) -> dict[int, bytes]: ...
    def drop_partial(self, content_id: ContentId, chunk_index: int) -> None: ...


def perform_store_update(
    store: ManagedStore, update: StoreUpdate
) -> ManifestAdded | PartialsLoaded | None:
    """Run one ``AddManifest`` or ``LoadPartials`` (say how it went), or a ``SetPinned``,
    ``WritePartial`` or ``DropPartial`` (nothing to say)."""
    if isinstance(update, WritePartial | DropPartial | LoadPartials):
        try:
            if isinstance(update, WritePartial):
                store.write_partial(
                    update.content_id, update.chunk_index, update.offset, update.data
                )
            elif isinstance(update, DropPartial):
                store.drop_partial(update.content_id, update.chunk_index)
            else:
                return PartialsLoaded(update.content_id, store.read_partials(update.content_id))
        except ShoalError:  # removed meanwhile: nothing to resume
            if isinstance(update, LoadPartials):
                return PartialsLoaded(update.content_id, {})
        return None
    if isinstance(update, AddManifest):
        try:
            store.add(update.manifest_file, pinned=True)
        except ShoalError as error:  # StoreError (cache full, disk full), a bad file
            return ManifestAdded(update, str(error))
        return ManifestAdded(update)
    try:
        if update.pinned:
            store.pin(update.content_id)
        else:
            store.unpin(update.content_id)
    except ShoalError:
        pass  # removed meanwhile: nothing left to protect
    return None


def perform_disk_effects(store: ManagedStore, effects: Sequence[DiskEffect]) -> list[DiskResult]:
    """Run ``effects`` in order; consecutive chunk writes as one batch (``perform_writes``)."""
    results: list[DiskResult] = []
    writes: list[WriteChunk] = []
    for effect in effects:
        if isinstance(effect, WriteChunk):
            writes.append(effect)
            continue
        if writes:
            results.extend(perform_writes(store, writes))
            writes = []
        added = perform_store_update(store, effect)
        if added is not None:
            results.append(added)
    if writes:
        results.extend(perform_writes(store, writes))
    return results
