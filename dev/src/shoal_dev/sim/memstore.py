"""A content store in memory, for simulated devices by the thousand.

``ContentStore`` keeps each package in a file per device: 10,000 devices and a 100 MiB
package would be a terabyte of disk. ``MemoryStore`` keeps each verified chunk as the
bytes object it was given: in flow mode every holder is handed the object its sender
read, so an estate holds each chunk of the package once, however many devices cache it.
It keeps the rules that matter to the swarm: only chunks of the right length are
stored (the agent hands over chunks its engine verified), and every chunk served is
hashed against the manifest first (``read_chunk``, memoised per bytes object by
``HashMemo``), as ``ContentStore.read_chunk`` re-checks the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shoal.core.chunkset import ChunkSet
from shoal.core.errors import ChunkHashMismatch
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest, decode_manifest_file
from shoal.store.content_store import EntryInfo
from shoal.store.errors import ChunkNotAvailable
from shoal_dev.sim.flows import HashMemo


@dataclass(slots=True)
class _Entry:
    manifest: Manifest
    chunks: list[bytes | None]
    verified: ChunkSet
    pinned: bool

    def info(self) -> EntryInfo:
        return EntryInfo(
            self.manifest.content_id,
            self.manifest.size,
            self.manifest.chunk_count,
            len(self.verified),
            self.verified.complete,
            self.pinned,
            0.0,
        )


@dataclass(slots=True)
class _Partial:
    """A partial file as the pieces written to it, in order, each kept by reference."""

    pieces: list[tuple[int, bytes | memoryview]] = field(default_factory=list)
    length: int = 0

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """``data`` at ``offset`` (at most the length held: no hole), over what was there,
        as a file's bytes are overwritten; the usual write appends."""
        end = offset + len(data)
        if offset == self.length:
            self.pieces.append((offset, data))
        else:
            before = [
                (start, piece[: offset - start]) for start, piece in self.pieces if start < offset
            ]
            after = [
                (max(start, end), piece[max(end - start, 0) :])
                for start, piece in self.pieces
                if start + len(piece) > end
            ]
            self.pieces = [*before, (offset, data), *after]
        self.length = max(self.length, end)

    def read(self) -> bytes:
        return b"".join(piece for _, piece in self.pieces)


class MemoryStore:
    """``ContentStoreLike`` in memory; chunks kept by reference (see the module doc)."""

    def __init__(self, hashes: HashMemo) -> None:
        self.hashes = hashes
        self._entries: dict[ContentId, _Entry] = {}
        #: Each chunk's partial file as the pieces written, by reference (views of the
        #: sender's chunk in flow mode, of the receive buffer in packet mode): no copy.
        self._partials: dict[tuple[ContentId, int], _Partial] = {}

    def __contains__(self, content_id: object) -> bool:
        return content_id in self._entries

    def add(self, manifest_file: bytes, *, pinned: bool = False) -> EntryInfo:
        manifest = decode_manifest_file(manifest_file).manifest
        entry = self._entries.get(manifest.content_id)
        if entry is None:
            entry = self._entries[manifest.content_id] = _Entry(
                manifest, [None] * manifest.chunk_count, ChunkSet(manifest.chunk_count), pinned
            )
        entry.pinned = entry.pinned or pinned
        return entry.info()

    def manifest(self, content_id: ContentId) -> Manifest:
        return self._entries[content_id].manifest

    def verified(self, content_id: ContentId) -> ChunkSet:
        return self._entries[content_id].verified.copy()

    def verified_count(self, content_id: ContentId) -> int:
        return len(self._entries[content_id].verified)

    def info(self, content_id: ContentId) -> EntryInfo:
        return self._entries[content_id].info()

    def entries(self) -> list[EntryInfo]:
        return [entry.info() for entry in self._entries.values()]

    def write_chunk(self, content_id: ContentId, chunk_index: int, data: bytes) -> bool:
        """Verify (SHA-256 against the manifest) and keep one chunk."""
        entry = self._entries[content_id]
        if self.hashes.sha256(data) != entry.manifest.chunk_hashes[chunk_index]:
            raise ChunkHashMismatch(f"chunk {chunk_index} of {content_id.short} does not verify")
        return self.write_verified_chunks(content_id, [(chunk_index, data)])

    def write_verified_chunks(
        self, content_id: ContentId, chunks: Sequence[tuple[int, bytes | bytearray]]
    ) -> bool:
        entry = self._entries[content_id]
        for chunk_index, data in chunks:
            if len(data) != entry.manifest.chunk_length(chunk_index):
                raise ChunkHashMismatch(f"chunk {chunk_index} of {content_id.short}: wrong length")
            if chunk_index not in entry.verified:
                entry.chunks[chunk_index] = data if isinstance(data, bytes) else bytes(data)
                entry.verified.add(chunk_index)
                self._partials.pop((content_id, chunk_index), None)
        return entry.verified.complete

    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
        """A held chunk, hashed against the manifest before it is served."""
        entry = self._entries.get(content_id)
        data = None if entry is None else entry.chunks[chunk_index]
        if entry is None or data is None:
            raise ChunkNotAvailable(f"chunk {chunk_index} of {content_id} is not held")
        if self.hashes.sha256(data) != entry.manifest.chunk_hashes[chunk_index]:
            raise ChunkNotAvailable(f"chunk {chunk_index} of {content_id.short} went bad")
        return data

    def stored_chunk(self, content_id: ContentId, chunk_index: int) -> bytes | None:
        """The bytes held for a chunk, unchecked (for the invariants' own check)."""
        return self._entries[content_id].chunks[chunk_index]

    def write_partial(
        self, content_id: ContentId, chunk_index: int, offset: int, data: bytes | memoryview
    ) -> bool:
        """``ContentStore.write_partial`` in memory (kept across a restart with the
        store; no cap: the simulator's agents write only chunks in flight)."""
        entry = self._entries.get(content_id)
        if entry is None or chunk_index in entry.verified:
            return False
        key = (content_id, chunk_index)
        held = self._partials.get(key)
        end = offset + len(data)
        if not data or not 0 <= offset <= (held.length if held is not None else 0):
            return False  # nothing, or a hole
        if end >= entry.manifest.chunk_length(chunk_index):
            return False
        if held is None:
            held = self._partials[key] = _Partial()
        held.write(offset, data)
        return True

    def read_partials(self, content_id: ContentId) -> dict[int, bytes]:
        return {
            index: partial.read()
            for (content, index), partial in self._partials.items()
            if content == content_id and index not in self._entries[content_id].verified
        }

    def drop_partial(self, content_id: ContentId, chunk_index: int) -> None:
        self._partials.pop((content_id, chunk_index), None)

    def pin(self, content_id: ContentId) -> None:
        self._entries[content_id].pinned = True

    def unpin(self, content_id: ContentId) -> None:
        self._entries[content_id].pinned = False


class LyingMemoryStore(MemoryStore):
    """A lying peer: it serves every chunk it holds with its first byte flipped."""

    def __init__(self, hashes: HashMemo) -> None:
        super().__init__(hashes)
        self._lies: dict[tuple[ContentId, int], bytes] = {}
        self.lies_told = 0

    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
        self.lies_told += 1
        key = (content_id, chunk_index)
        lie = self._lies.get(key)
        if lie is None:
            data = bytearray(super().read_chunk(content_id, chunk_index))
            data[0] ^= 0xFF
            lie = self._lies[key] = bytes(data)
        return lie
