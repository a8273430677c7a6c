"""The plaintext of a confidential content, written outside the cache.

The cache keeps the ciphertext: it is what the manifest describes, what peers are
served and what the store verifies; a confidential download is downloaded and verified
exactly like a plain one. Its plaintext is written only once the download is complete,
and only where it is needed:

- a version with an install specification is decrypted when the installer stages it
  (``stage_plaintext``, called by ``shoal.client.installer``): the copy a plain package
  gets anyway becomes the decryption, one pass, and the staged plaintext is removed with
  the staged file once the install no longer needs it;
- a version without one is decrypted once, after its download, into
  ``DATA_DIR/packages/CONTENT_ID`` (``write_plaintext``).

Either way the plaintext is written (file mode 0600, directory 0700) to a temporary
file, fsynced, and only then renamed into place, so a crash never leaves a partial or
wrong package under that name. Blocking file I/O: the shell runs it in a worker thread.

Why no SHA-256 of the whole plaintext: every ciphertext chunk was checked against the
console-signed manifest's chunk hash before the cache wrote it, and every plaintext
chunk is authenticated by its AES-GCM tag (bound to its index and the layout) under a
key only the console generated and sealed to this device in the console-signed
document, so the plaintext is exactly what the console encrypted; the sizes are still
checked. The document's ``plaintext_sha256`` stays signed, shown and usable by audits;
here it only tells whether a file already in place can be kept.

Cost: each run of ciphertext chunks (up to 4 MiB) is read from the cache file into a
reused buffer and authenticated by its AES-GCM tag (the tag covers every byte, so the
cache's SHA-256 re-check would add nothing; a chunk whose tag fails is handed to the
cache's ``read_chunk``, which notices a chunk gone bad on disk and marks it for download
again). The plaintext is decrypted straight into a page-aligned staging buffer and
written from there with ``O_DIRECT`` in 4 KiB-aligned pieces of about a MiB, so it
bypasses the page cache: no copy into it, no dirty pages for the kernel to write back
and drop later (the chunks are 16 bytes short of a power of two, so the unaligned tail
of each piece moves to the front of the buffer; the last piece is padded to 4 KiB and
the file truncated to its size). Where the file system refuses ``O_DIRECT`` it writes
through the page cache and starts writeback of each piece as it goes. Either way the
final fsync has little left to do. AES-GCM releases the GIL (cryptography >= 50).

``decrypt_to`` can also follow a download still on its way (``wait_for_chunk``): it
then decrypts each chunk as soon as the cache holds it verified. The client no longer
does that (it competed for the CPU with the transfer itself); the option stays for
tools that want the plaintext as early as possible.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from shoal.assignments import SealedContent
from shoal.core import portable
from shoal.core.digest import Sha256
from shoal.core.files import fsync_directory
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest
from shoal.core.sealing import (
    TAG_SIZE,
    ChunkCipher,
    ChunkDecryptionFailed,
    ConfidentialError,
    open_content_key,
)

PACKAGES_DIRECTORY = "packages"
_READ_BLOCK = 1 << 20
DIRECT_ALIGNMENT = 4096
"""File offsets, lengths and buffer addresses of ``O_DIRECT`` writes are multiples of
this (the logical block size of common disks is 512 or 4096 bytes)."""
_FLUSH_BYTES = 1 << 20
_BATCH_BYTES = 4 << 20
CHUNK_POLL_SECONDS = 0.02

ChunkReady = Callable[[int], bool]
"""Is chunk N in the cache, verified?"""
ChunkWait = Callable[[int, float], bool]
"""Wait up to T seconds for chunk N to be in the cache, verified; is it there?"""
Stopped = Callable[[], bool]


class PlaintextCancelled(ConfidentialError):
    """The download was withdrawn, or the client stops, before every chunk came."""


class CiphertextSource(Protocol):
    """What decryption needs of the cache (``shoal.store.ContentStore``)."""

    def manifest(self, content_id: ContentId) -> Manifest: ...
    def data_path(self, content_id: ContentId) -> Path: ...
    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes: ...


def write_plaintext(
    store: CiphertextSource,
    content_id: ContentId,
    sealed: SealedContent,
    device_key: DeviceKey,
    directory: Path,
    *,
    chunk_ready: ChunkReady | None = None,
    wait_for_chunk: ChunkWait | None = None,
    stopped: Stopped | None = None,
) -> Path:
    """Decrypt a confidential content from ``store`` into ``directory/CONTENT_ID``
    (``directory`` created with mode 0700); returns that path. See ``decrypt_to``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / content_id.hex
    decrypt_to(
        store,
        content_id,
        sealed,
        device_key,
        target,
        chunk_ready=chunk_ready,
        wait_for_chunk=wait_for_chunk,
        stopped=stopped,
    )
    return target


def stage_plaintext(
    store: CiphertextSource,
    content_id: ContentId,
    sealed: SealedContent,
    device_key: DeviceKey,
    staged: Path,
) -> None:
    """Stage a complete confidential content for its installer: decrypt it from the
    cache straight into ``staged`` (its directory created with mode 0700). A staged file
    already there is kept, as ``shoal.client.installer.stage`` keeps a copied one."""
    if staged.exists():
        return
    staged.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    decrypt_to(store, content_id, sealed, device_key, staged)


def decrypt_to(
    store: CiphertextSource,
    content_id: ContentId,
    sealed: SealedContent,
    device_key: DeviceKey,
    target: Path,
    *,
    chunk_ready: ChunkReady | None = None,
    wait_for_chunk: ChunkWait | None = None,
    stopped: Stopped | None = None,
) -> None:
    """Decrypt a confidential content from ``store`` into the file ``target``.

    Raises ``ConfidentialError`` when the key is not this device's, the sizes disagree
    or a chunk does not open (its GCM tag fails); nothing is then left under the name.
    An existing file with the right SHA-256 is kept. With ``wait_for_chunk`` it waits
    for each chunk in turn (with ``chunk_ready``, by polling it every
    ``CHUNK_POLL_SECONDS``), until ``stopped()`` (then ``PlaintextCancelled``). Neither:
    the content is complete in ``store``.
    """
    if wait_for_chunk is None and chunk_ready is not None:
        wait_for_chunk = _polling(chunk_ready)
    if sealed.sealed_key is None:
        raise ConfidentialError("the console has not sealed this content's key to this device")
    manifest = store.manifest(content_id)
    content_key = open_content_key(sealed.sealed_key, device_key, content_id.digest)
    cipher = ChunkCipher(content_key, manifest.chunk_size, sealed.plaintext_size)
    if (cipher.sealed_size, cipher.chunk_count) != (manifest.size, manifest.chunk_count):
        raise ConfidentialError(
            f"{content_id.short}: {manifest.size} bytes of ciphertext cannot hold "
            f"{sealed.plaintext_size} bytes of plaintext"
        )
    if _already_written(target, sealed):
        return
    directory = target.parent
    temporary = directory / f".{target.name}.tmp"
    output = _PlaintextFile(temporary, max(cipher.plaintext_chunk_size, 1))
    try:
        try:
            _decrypt_file(store, content_id, cipher, output, wait_for_chunk, stopped)
            output.finish()
        finally:
            output.close()
        portable.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)


def _decrypt_file(
    store: CiphertextSource,
    content_id: ContentId,
    cipher: ChunkCipher,
    output: _PlaintextFile,
    wait_for_chunk: ChunkWait | None,
    stopped: Stopped | None,
) -> None:
    """Decrypt every chunk, each authenticated by its GCM tag, into ``output``.

    Whenever it gets to run, it takes every chunk that is ready in a row (up to
    ``_BATCH_BYTES``) with one read, so that it hands the GIL back and forth with the
    receive loop less often when it has fallen behind.
    """
    chunk_size = cipher.chunk_size
    count = cipher.chunk_count
    batch = max(1, _BATCH_BYTES // chunk_size)
    sealed_in = memoryview(bytearray(chunk_size * batch))
    source = os.open(store.data_path(content_id), os.O_RDONLY)
    try:
        first = 0
        while first < count:
            end = min(count, first + batch)
            if wait_for_chunk is not None:
                _wait_for(first, wait_for_chunk, stopped)
                ready = first + 1
                while ready < end and wait_for_chunk(ready, 0):
                    ready += 1
                end = ready
            span = (end - 1 - first) * chunk_size + cipher.plaintext_length(end - 1) + TAG_SIZE
            if portable.preadinto(source, sealed_in[:span], first * chunk_size) != span:
                for chunk_index in range(first, end):
                    store.read_chunk(content_id, chunk_index)  # names what is missing
                raise ChunkDecryptionFailed(f"chunks {first}-{end - 1} are not in the cache")
            for chunk_index in range(first, end):
                length = cipher.plaintext_length(chunk_index)
                start = (chunk_index - first) * chunk_size
                ciphertext = sealed_in[start : start + length + TAG_SIZE]
                try:
                    cipher.decrypt_into(chunk_index, ciphertext, output.space(length))
                except ChunkDecryptionFailed:
                    store.read_chunk(content_id, chunk_index)  # bad on disk: marked, raises
                    raise
                output.commit(length)  # only now: the tag held
            first = end
    finally:
        os.close(source)


class _PlaintextFile:
    """The plaintext, written in order from a page-aligned staging buffer.

    ``space(n)`` is where the next ``n`` plaintext bytes are to be decrypted;
    ``commit(n)`` takes them, once authenticated, and writes out every whole 4 KiB
    block once about a MiB is staged. With ``O_DIRECT`` the writes bypass the page
    cache; where the file system refuses it (at open or at the first write), the same
    writes go through the page cache, each followed by a hint to start its writeback.
    ``finish`` writes the rest (padded to a block, then the file is truncated to its
    size) and fsyncs.
    """

    def __init__(self, path: Path, largest_piece: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        direct = getattr(os, "O_DIRECT", 0) if portable.LINUX_PATHS else 0
        self.direct = bool(direct)
        try:
            self._descriptor = os.open(path, flags | direct, 0o600)
        except OSError as error:
            if not direct or error.errno != errno.EINVAL:
                raise
            self.direct = False
            self._descriptor = os.open(path, flags, 0o600)
        capacity = _FLUSH_BYTES + largest_piece + 2 * DIRECT_ALIGNMENT
        self._buffer = mmap.mmap(-1, capacity - capacity % DIRECT_ALIGNMENT)
        self._view = memoryview(self._buffer)
        self._staged = 0  # bytes in the buffer, from its start
        self._written = 0  # bytes in the file

    def space(self, length: int) -> memoryview:
        return self._view[self._staged : self._staged + length]

    def commit(self, length: int) -> None:
        self._staged += length
        whole = self._staged - self._staged % DIRECT_ALIGNMENT
        if whole >= _FLUSH_BYTES:
            self._write(whole)
            rest = self._staged - whole
            self._view[:rest] = self._view[whole : self._staged]
            self._staged = rest

    def finish(self) -> None:
        size = self._written + self._staged
        if self._staged:
            padded = -(-self._staged // DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT
            self._view[self._staged : padded] = bytes(padded - self._staged)
            self._write(padded if self.direct else self._staged)
            self._staged = 0
            if self._written != size:
                os.ftruncate(self._descriptor, size)
                self._written = size
        os.fsync(self._descriptor)

    def close(self) -> None:
        os.close(self._descriptor)
        self._view.release()
        # A failed decryption's traceback may still hold a slice of the buffer: the
        # mapping then goes when that does.
        with contextlib.suppress(BufferError):
            self._buffer.close()

    def _write(self, length: int) -> None:
        data = self._view[:length]
        while data:
            try:
                done = portable.pwrite(self._descriptor, data, self._written)
            except OSError as error:
                if not self.direct or error.errno != errno.EINVAL:
                    raise
                self._stop_direct()
                continue
            if done % DIRECT_ALIGNMENT and len(data) > done:
                self._stop_direct()  # a short write left the offset unaligned
            if not self.direct:
                _start_writeback(self._descriptor, self._written, done)
            self._written += done
            data = data[done:]

    def _stop_direct(self) -> None:
        import fcntl  # POSIX only, like O_DIRECT

        flags = fcntl.fcntl(self._descriptor, fcntl.F_GETFL)
        fcntl.fcntl(self._descriptor, fcntl.F_SETFL, flags & ~getattr(os, "O_DIRECT", 0))
        self.direct = False


def _wait_for(chunk_index: int, wait_for_chunk: ChunkWait, stopped: Stopped | None) -> None:
    while not wait_for_chunk(chunk_index, CHUNK_POLL_SECONDS):
        if stopped is not None and stopped():
            raise PlaintextCancelled(f"stopped before chunk {chunk_index} came")


def _polling(chunk_ready: ChunkReady) -> ChunkWait:
    """A ``ChunkWait`` for a source that cannot notify: look, sleep, look again."""

    def wait_for_chunk(chunk_index: int, timeout: float) -> bool:
        if chunk_ready(chunk_index):
            return True
        time.sleep(timeout)
        return chunk_ready(chunk_index)

    return wait_for_chunk


def _start_writeback(descriptor: int, offset: int, length: int) -> None:
    """Start writing this range to disk now, while the download goes on, so that the
    final fsync has little left to do (Linux starts writeback of dirty pages on
    POSIX_FADV_DONTNEED, then drops them from the page cache once clean)."""
    advise = getattr(os, "posix_fadvise", None) if portable.LINUX_PATHS else None
    if advise is not None:
        advise(descriptor, offset, length, os.POSIX_FADV_DONTNEED)


def _already_written(path: Path, sealed: SealedContent) -> bool:
    try:
        if path.stat().st_size != sealed.plaintext_size:
            return False
        digest = Sha256()
        with open(path, "rb") as existing:
            while block := existing.read(_READ_BLOCK):
                digest.update(block)
    except OSError:
        return False
    return digest.digest() == sealed.plaintext_sha256


def plaintext_stager(
    store: CiphertextSource,
    device_key: DeviceKey,
    sealed_for: Callable[[ContentId], SealedContent | None],
) -> Callable[[ContentId], Callable[[Path], None] | None]:
    """The installer's ``Unsealer``: for a content whose sealed key ``sealed_for`` knows
    (looked up on the event loop), a function that stages it by ``stage_plaintext``."""

    def unsealer(content_id: ContentId) -> Callable[[Path], None] | None:
        sealed = sealed_for(content_id)
        if sealed is None or sealed.sealed_key is None:
            return None
        return functools.partial(stage_plaintext, store, content_id, sealed, device_key)

    return unsealer
