"""The local content store: a cache that a client fills from untrusted peers.

Theory of operation
-------------------
Each content ID has three files in the store directory::

    <content-id>.manifest   the manifest file (as signed by the console)
    <content-id>.data       the package bytes, preallocated to full size
    <content-id>.state      the sidecar: which chunks are verified, pinned, last use
    <content-id>.<n>.part   the received prefix of chunk n while it arrives (untrusted,
                            not fsynced: ``shoal.store.partials``)

Invariants, which hold after a crash (SIGKILL) at any instruction:

* A chunk is written to ``.data`` only after its bytes hash to the manifest's value
  (``write_chunk`` hashes them; ``write_verified_chunk`` takes bytes the transfer engine
  has just hashed, so a received chunk is hashed once), and it is marked verified only
  after the write. So every chunk the sidecar marks verified
  has the right bytes on disk (with ``durable=True`` also across power loss: the data is
  fdatasync'ed before the sidecar is replaced).
* The sidecar is replaced atomically (write to a temporary file, fsync, rename, fsync the
  directory), so it is always either the previous or the next version, never a mix.
* ``write_chunk`` returns only after the new sidecar is in place, so an acknowledged
  chunk is never lost.
* An entry exists when its sidecar exists. ``add`` writes the sidecar last, so a crash
  during ``add`` leaves orphan files that the next open removes.

The whole file is not hashed again when its last chunk arrives: the chunk hashes of the
signed manifest pin every byte (the manifest's whole-file SHA-256 is checked by
``import_file`` and ``repair``). Reading a chunk for a peer re-checks its hash, so
bit rot on disk is not served (0.6 ms per MiB with SHA extensions).

Eviction: with a size cap, adding content evicts the least recently used entries that
are not pinned (assigned content is pinned) until the new entry fits.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from shoal.core import portable
from shoal.core.chunkset import ChunkSet
from shoal.core.digest import Sha256, sha256
from shoal.core.errors import ChunkHashMismatch, ContentHashMismatch, ManifestError
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest, decode_manifest_file
from shoal.store.disk import (
    atomic_write,
    disk_full_is_named,
    hash_descriptor,
    preallocate,
    pwrite_all,
)
from shoal.store.errors import (
    CacheFull,
    ChunkNotAvailable,
    ContentNotFound,
    SidecarCorrupt,
    StoreDiskFull,
)
from shoal.store.partials import PartialFiles
from shoal.store.sidecar import (
    SIDECAR_FORMAT,
    Entry,
    EntryInfo,
    SidecarProblem,
    encode_sidecar,
    parse_sidecar,
)

__all__ = ["SIDECAR_FORMAT", "ContentStore", "EntryInfo", "SidecarProblem"]


class ContentStore:
    """Verified, crash-consistent, size-capped storage of packages by content ID.

    Safe for concurrent use by threads: downloads write while peers read. ``strict``
    makes opening fail on a corrupt sidecar (``SidecarCorrupt``); otherwise such
    entries are left out and listed in ``problems`` for ``repair``.
    """

    def __init__(
        self,
        root: Path,
        *,
        capacity_bytes: int | None = None,
        durable: bool = True,
        strict: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.capacity_bytes = capacity_bytes
        self.durable = durable
        self._clock = clock
        self._lock = threading.RLock()
        self._chunk_written = threading.Condition(self._lock)
        self._entries: dict[ContentId, Entry] = {}
        self.problems: list[SidecarProblem] = []
        self.partials = PartialFiles(root)
        root.mkdir(parents=True, exist_ok=True)
        self._load(strict)

    # ----------------------------------------------------------------- paths

    def _path(self, content_id: ContentId, suffix: str) -> Path:
        return self.root / f"{content_id.hex}.{suffix}"

    def data_path(self, content_id: ContentId) -> Path:
        """Path of the package bytes (complete only when ``info().complete``)."""
        return self._path(content_id, "data")

    # ------------------------------------------------------------------ open

    def _load(self, strict: bool) -> None:
        for leftover in self.root.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        with_sidecar = set()
        for sidecar in sorted(self.root.glob("*.state")):
            try:
                content_id = ContentId.from_hex(sidecar.stem)
            except ValueError:
                continue
            with_sidecar.add(sidecar.stem)
            try:
                self._entries[content_id] = self._read_entry(content_id)
            except SidecarCorrupt as error:
                if strict:
                    raise
                self.problems.append(SidecarProblem(content_id, sidecar, str(error)))
        for suffix in ("manifest", "data"):
            for path in self.root.glob(f"*.{suffix}"):
                if path.stem not in with_sidecar:
                    path.unlink(missing_ok=True)  # orphan of an interrupted add()
        self.partials.scan(self._partial_length)

    def _partial_length(self, content_id: ContentId, chunk_index: int) -> int:
        """The length of a chunk a partial file may be kept for (0: none)."""
        entry = self._entries.get(content_id)
        if entry is None or not 0 <= chunk_index < entry.manifest.chunk_count:
            return 0
        if chunk_index in entry.verified:
            return 0
        return entry.manifest.chunk_length(chunk_index)

    def _read_entry(self, content_id: ContentId) -> Entry:
        sidecar = self._path(content_id, "state")
        try:
            manifest = decode_manifest_file(self._path(content_id, "manifest").read_bytes())
        except (OSError, ManifestError) as error:
            raise SidecarCorrupt(f"{sidecar}: its manifest is unreadable ({error})") from None
        state = parse_sidecar(sidecar, content_id, manifest.manifest)
        try:
            descriptor = os.open(self._path(content_id, "data"), os.O_RDWR)
        except OSError as error:
            raise SidecarCorrupt(f"{sidecar}: its data file is unreadable ({error})") from None
        return Entry(manifest.manifest, descriptor=descriptor, **state)

    # --------------------------------------------------------------- queries

    def __contains__(self, content_id: object) -> bool:
        return content_id in self._entries

    def _entry(self, content_id: ContentId) -> Entry:
        try:
            return self._entries[content_id]
        except KeyError:
            raise ContentNotFound(f"content {content_id.short} is not in the store") from None

    def manifest(self, content_id: ContentId) -> Manifest:
        return self._entry(content_id).manifest

    def manifest_bytes(self, content_id: ContentId) -> bytes:
        """The manifest file as it was added (with its signature, if any)."""
        self._entry(content_id)
        return self._path(content_id, "manifest").read_bytes()

    def verified(self, content_id: ContentId) -> ChunkSet:
        """A copy of the set of verified chunks."""
        with self._lock:
            return self._entry(content_id).verified.copy()

    def verified_count(self, content_id: ContentId) -> int:
        """How many chunks are verified, read without the store's lock: a status on the
        event loop must not wait while a write batch holds it (``pwrite``s, the
        ``fdatasync``, the sidecar; measured 9 ms per status tick on a loaded machine).
        The figure may lag or lead the sidecar by the batch being recorded."""
        return len(self._entry(content_id).verified)

    def wait_for_chunk(self, content_id: ContentId, chunk_index: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for chunk ``chunk_index`` to be verified; is it?

        Woken by ``write_chunk`` (a reader decrypting as chunks arrive, in another thread,
        need not poll). ``ContentNotFound`` once the content is removed.
        """
        with self._chunk_written:
            return self._chunk_written.wait_for(
                lambda: chunk_index in self._entry(content_id).verified, timeout
            )

    def info(self, content_id: ContentId) -> EntryInfo:
        with self._lock:
            return self._entry(content_id).info()

    def entries(self) -> list[EntryInfo]:
        """Every entry, most recently used first."""
        with self._lock:
            infos = [entry.info() for entry in self._entries.values()]
        return sorted(infos, key=lambda info: info.last_used, reverse=True)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(entry.manifest.size for entry in self._entries.values())

    # ------------------------------------------------------------------- add

    def add(self, manifest_file: bytes, *, pinned: bool = False) -> EntryInfo:
        """Start holding a package: reserve its space and return its (empty) entry.

        The caller has verified the manifest's signature. Adding content already in the
        store only updates ``pinned`` (to True when asked) and returns the entry.
        """
        manifest = decode_manifest_file(manifest_file).manifest
        content_id = manifest.content_id
        with self._lock:
            existing = self._entries.get(content_id)
            if existing is not None:
                if pinned and not existing.pinned:
                    self.pin(content_id)
                return existing.info()
            self._make_room(manifest.size, content_id)
            manifest_path = self._path(content_id, "manifest")
            data_path = self._path(content_id, "data")
            descriptor = -1
            try:
                with disk_full_is_named(f"content {content_id.short}", self.root):
                    atomic_write(manifest_path, manifest_file, durable=self.durable)
                    descriptor = os.open(data_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                    preallocate(descriptor, manifest.size)
                    entry = Entry(
                        manifest=manifest,
                        verified=ChunkSet(manifest.chunk_count),
                        complete=manifest.chunk_count == 0,
                        pinned=pinned,
                        last_used=self._clock(),
                        descriptor=descriptor,
                    )
                    if entry.complete:
                        self._check_whole_file(entry)
                    self._persist(entry)
            except BaseException:
                if descriptor >= 0:
                    os.close(descriptor)
                data_path.unlink(missing_ok=True)
                manifest_path.unlink(missing_ok=True)
                raise
            self._entries[content_id] = entry
            return entry.info()

    def _make_room(self, size: int, adding: ContentId) -> None:
        if self.capacity_bytes is None:
            return
        used = self.used_bytes()
        if used + size <= self.capacity_bytes:
            return
        candidates = sorted(
            (entry for entry in self._entries.values() if not entry.pinned),
            key=lambda entry: entry.last_used,
        )
        pinned_bytes = sum(entry.manifest.size for entry in self._entries.values() if entry.pinned)
        if pinned_bytes + size > self.capacity_bytes:
            raise CacheFull(
                f"content {adding.short} needs {size} bytes; the cache cap is "
                f"{self.capacity_bytes} bytes and pinned (assigned) content uses {pinned_bytes}"
            )
        for entry in candidates:
            if used + size <= self.capacity_bytes:
                break
            used -= entry.manifest.size
            self.remove(entry.manifest.content_id)

    # ----------------------------------------------------------------- write

    def write_chunk(self, content_id: ContentId, chunk_index: int, data: bytes) -> bool:
        """Verify and store one chunk; return True when the package is now complete.

        Raises ``ChunkHashMismatch`` (nothing written) for bad bytes and
        ``StoreDiskFull`` (store unchanged) when the disk is full. Writing a chunk that
        is already verified is a no-op.
        """
        self._entry(content_id).manifest.verify_chunk(chunk_index, data)
        return self.write_verified_chunk(content_id, chunk_index, data)

    def write_verified_chunk(
        self, content_id: ContentId, chunk_index: int, data: bytes | bytearray | memoryview
    ) -> bool:
        """Store one chunk whose bytes the caller has just hashed against the manifest
        (see ``write_verified_chunks``)."""
        return self.write_verified_chunks(content_id, [(chunk_index, data)])

    def write_verified_chunks(
        self,
        content_id: ContentId,
        chunks: Sequence[tuple[int, bytes | bytearray | memoryview]],
    ) -> bool:
        """Store chunks whose bytes the caller has just hashed against the manifest;
        return True when the package is now complete.

        For the transfer engine's ``ChunkReceived`` (verified in memory on receipt), so
        a received chunk is hashed once; only lengths are checked here
        (``ChunkHashMismatch``, nothing written). One ``fdatasync`` and one sidecar
        update for the whole batch: every chunk is on disk before any is marked, and the
        sidecar is durable before this returns. Chunks already verified are skipped.
        """
        entry = self._entry(content_id)
        manifest = entry.manifest
        for chunk_index, data in chunks:
            if not 0 <= chunk_index < manifest.chunk_count:
                raise ChunkHashMismatch(f"chunk {chunk_index} of {content_id.short}: no such chunk")
            if len(data) != manifest.chunk_length(chunk_index):
                raise ChunkHashMismatch(
                    f"chunk {chunk_index} of {content_id.short}: {len(data)} bytes, expected "
                    f"{manifest.chunk_length(chunk_index)}"
                )
        with self._lock:
            entry = self._entry(content_id)
            new = [(index, data) for index, data in chunks if index not in entry.verified]
            if not new:
                return entry.complete
            what = f"chunk {new[0][0]} of {content_id.short}"
            with disk_full_is_named(what, self.root):
                for chunk_index, data in new:
                    pwrite_all(entry.descriptor, data, chunk_index * manifest.chunk_size)
                if self.durable:
                    os.fdatasync(entry.descriptor)
                added = [index for index, _ in new if entry.verified.add(index)]
                entry.last_used = self._clock()
                entry.complete = entry.verified.complete
                try:
                    self._persist(entry)
                except BaseException:
                    # Memory must say what the sidecar on disk says.
                    for chunk_index in added:
                        entry.verified.discard(chunk_index)
                    entry.complete = False
                    raise
                self._chunk_written.notify_all()
                for chunk_index in added:  # marked verified: their prefixes are done
                    self.partials.remove(content_id, chunk_index)
            return entry.complete

    def _check_whole_file(self, entry: Entry) -> None:
        digest = hash_descriptor(entry.descriptor, entry.manifest.size)
        if digest != entry.manifest.sha256:
            raise ContentHashMismatch(
                f"content {entry.manifest.content_id.short}: every chunk verified but the "
                "whole file does not match the manifest's SHA-256 (inconsistent manifest)"
            )
        entry.complete = True

    def import_file(self, manifest_file: bytes, source: Path, *, pinned: bool = False) -> EntryInfo:
        """Add a complete package from a local file, verifying every chunk as it goes,
        and the whole file against the manifest's SHA-256 (``ContentHashMismatch``: the
        entry is removed)."""
        info = self.add(manifest_file, pinned=pinned)
        manifest = self.manifest(info.content_id)
        verified = self.verified(info.content_id)
        whole = Sha256()
        with open(source, "rb") as package:
            for chunk_index in range(manifest.chunk_count):
                data = package.read(manifest.chunk_length(chunk_index))
                whole.update(data)
                if chunk_index not in verified:
                    self.write_chunk(info.content_id, chunk_index, data)
        if whole.digest() != manifest.sha256:
            self.remove(info.content_id)
            raise ContentHashMismatch(
                f"content {info.content_id.short}: every chunk verified but the whole file "
                "does not match the manifest's SHA-256 (inconsistent manifest)"
            )
        return self.info(info.content_id)

    # -------------------------------------------------------------- partials

    def write_partial(
        self,
        content_id: ContentId,
        chunk_index: int,
        offset: int,
        data: bytes | bytearray | memoryview,
    ) -> bool:
        """Write received bytes of a chunk in flight to its partial file at ``offset``
        (``shoal.store.partials``: no fsync, growing from its end only, capped); False
        when refused (no such content, a verified chunk, a hole, the cap)."""
        with self._lock:
            length = self._partial_length(content_id, chunk_index)
            if not length:
                return False
            return self.partials.write(content_id, chunk_index, offset, data, length)

    def read_partials(self, content_id: ContentId) -> dict[int, bytes]:
        """The partial files of ``content_id``'s chunks not yet verified, by chunk index
        (untrusted bytes: a resumed request's prefix, hashed with the rest)."""
        with self._lock:
            return {
                chunk_index: data
                for chunk_index in self.partials.chunks(content_id)
                if self._partial_length(content_id, chunk_index)
                and (data := self.partials.read(content_id, chunk_index))
            }

    def drop_partial(self, content_id: ContentId, chunk_index: int) -> None:
        """The chunk failed (its prefix may be the bad bytes): remove its partial file."""
        with self._lock:
            self.partials.remove(content_id, chunk_index)

    # ------------------------------------------------------------------ read

    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
        """Return a verified chunk, re-checked against its hash before it is served.

        Raises ``ChunkNotAvailable`` if the chunk is not verified here, and
        ``ChunkHashMismatch`` if the bytes on disk went bad (the chunk is then
        unmarked, so it will be fetched again).
        """
        with self._lock:
            entry = self._entry(content_id)
            if chunk_index not in entry.verified:
                raise ChunkNotAvailable(
                    f"chunk {chunk_index} of {content_id.short} is not verified in this store"
                )
            length = entry.manifest.chunk_length(chunk_index)
            data = portable.pread(entry.descriptor, length, chunk_index * entry.manifest.chunk_size)
            entry.last_used = self._clock()
        try:
            entry.manifest.verify_chunk(chunk_index, data)
        except ChunkHashMismatch:
            with self._lock:
                entry.verified.discard(chunk_index)
                entry.complete = False
                self._persist(entry)
            raise
        return data

    # ------------------------------------------------------------ management

    def pin(self, content_id: ContentId) -> None:
        """Protect content from eviction (it is assigned to this device)."""
        self._set_pinned(content_id, True)

    def unpin(self, content_id: ContentId) -> None:
        self._set_pinned(content_id, False)

    def _set_pinned(self, content_id: ContentId, pinned: bool) -> None:
        with self._lock:
            entry = self._entry(content_id)
            if entry.pinned != pinned:
                entry.pinned = pinned
                self._persist(entry)

    def remove(self, content_id: ContentId) -> None:
        """Forget content: the sidecar goes first, so a crash leaves only orphans."""
        with self._lock:
            entry = self._entries.pop(content_id, None)
            if entry is None:
                raise ContentNotFound(f"content {content_id.short} is not in the store")
            os.close(entry.descriptor)
            for suffix in ("state", "data", "manifest"):
                self._path(content_id, suffix).unlink(missing_ok=True)
            self.partials.remove_content(content_id)
            self._chunk_written.notify_all()  # a reader waiting for it learns it is gone

    def repair(self, content_id: ContentId) -> EntryInfo:
        """Rebuild a sidecar from the bytes on disk: every chunk that verifies is kept."""
        with self._lock:
            manifest = decode_manifest_file(
                self._path(content_id, "manifest").read_bytes()
            ).manifest
            descriptor = os.open(self._path(content_id, "data"), os.O_RDWR)
            verified = ChunkSet(manifest.chunk_count)
            for chunk_index in range(manifest.chunk_count):
                length = manifest.chunk_length(chunk_index)
                data = portable.pread(descriptor, length, chunk_index * manifest.chunk_size)
                if len(data) == length and sha256(data) == manifest.chunk_hashes[chunk_index]:
                    verified.add(chunk_index)
            old = self._entries.pop(content_id, None)
            if old is not None:
                os.close(old.descriptor)
            entry = Entry(manifest, verified, False, False, self._clock(), descriptor)
            if verified.complete:
                self._check_whole_file(entry)
            self._persist(entry)
            self._entries[content_id] = entry
            self.problems = [p for p in self.problems if p.content_id != content_id]
            return entry.info()

    def close(self) -> None:
        """Persist last-use times (for LRU order across restarts) and close every file."""
        with self._lock:
            for entry in self._entries.values():
                try:
                    self._persist(entry)
                except StoreDiskFull:
                    pass  # last-use times are a hint; the verified set is already on disk
                finally:
                    os.close(entry.descriptor)
            self._entries.clear()

    def __enter__(self) -> ContentStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---------------------------------------------------------- persistence

    def _persist(self, entry: Entry) -> None:
        with disk_full_is_named(
            f"the state of content {entry.manifest.content_id.short}", self.root
        ):
            atomic_write(
                self._path(entry.manifest.content_id, "state"),
                encode_sidecar(entry),
                durable=self.durable,
            )
