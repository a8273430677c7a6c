"""The plaintext of a confidential download, written outside the cache.

The cache keeps the ciphertext: it is what the manifest describes, what peers are
served and what the store verifies. Once a confidential download is complete, the
client opens its sealed content key with its device key and decrypts the chunks into
``DATA_DIR/packages/CONTENT_ID`` (directory mode 0700, file mode 0600): written to a
temporary file, fsynced, checked against the plaintext SHA-256 the console signed, and
only then renamed into place, so a crash never leaves a partial or wrong package under
that name. Blocking file I/O: the shell runs it in a worker thread.

Cost: each ciphertext chunk is read from the cache file into a reused buffer and
authenticated by its AES-GCM tag (the tag covers every byte, so the cache's SHA-256
re-check would add nothing; a chunk whose tag fails is handed to the cache's
``read_chunk``, which notices a chunk gone bad on disk and marks it for download
again). The plaintext SHA-256 runs on a second thread while the next chunk is read and
decrypted, as ``shoal.core.packing`` does.

It need not wait for the whole download: given ``wait_for_chunk`` (or ``chunk_ready``,
polled), it decrypts each chunk as soon as the cache holds it verified, in order, while
the rest is still on its way, so the work overlaps the transfer; the result is still
checked whole, at the end. ``wait_for_chunk`` blocks on the writer's notification, not
on a sleep, so the last chunk is decrypted the moment it is written, not up to a poll
period later.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from shoal.assignments import SealedContent
from shoal.core.errors import ContentHashMismatch
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
    """Decrypt a complete confidential content from ``store`` into ``directory``.

    Returns the plaintext's path. Raises ``ConfidentialError`` when the key is not this
    device's or a chunk does not open, ``ContentHashMismatch`` when the result is not
    the plaintext the console packed. An existing file with the right SHA-256 is kept.
    With ``wait_for_chunk`` it waits for each chunk in turn (with ``chunk_ready``, by
    polling it every ``CHUNK_POLL_SECONDS``), until ``stopped()`` (then
    ``PlaintextCancelled``). Neither: the content is complete in ``store``.
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
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / content_id.hex
    if _already_written(target, sealed):
        return target
    temporary = directory / f".{content_id.hex}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as output:
            digest = _decrypt_file(
                store, content_id, cipher, output.fileno(), wait_for_chunk, stopped
            )
            os.fsync(output.fileno())
        if digest != sealed.plaintext_sha256:
            raise ContentHashMismatch(
                f"{content_id.short}: the decrypted package does not match its SHA-256"
            )
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return target


def _decrypt_file(
    store: CiphertextSource,
    content_id: ContentId,
    cipher: ChunkCipher,
    output: int,
    wait_for_chunk: ChunkWait | None,
    stopped: Stopped | None,
) -> bytes:
    """Decrypt every chunk into ``output``; return the plaintext's SHA-256."""
    digest = hashlib.sha256()
    chunk_size = cipher.chunk_size
    sealed_in = bytearray(chunk_size)
    plain_out = (bytearray(chunk_size - TAG_SIZE), bytearray(chunk_size - TAG_SIZE))
    pending: Future[None] | None = None
    source = os.open(store.data_path(content_id), os.O_RDONLY)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-open") as pool:
            for chunk_index in range(cipher.chunk_count):
                if wait_for_chunk is not None:
                    _wait_for(chunk_index, wait_for_chunk, stopped)
                wanted = cipher.plaintext_length(chunk_index) + TAG_SIZE
                ciphertext = memoryview(sealed_in)[:wanted]
                if os.preadv(source, [ciphertext], chunk_index * chunk_size) != wanted:
                    store.read_chunk(content_id, chunk_index)  # names what is missing
                    raise ChunkDecryptionFailed(f"chunk {chunk_index} is not in the cache")
                out = memoryview(plain_out[chunk_index % 2])
                try:
                    length = cipher.decrypt_into(chunk_index, ciphertext, out)
                except ChunkDecryptionFailed:
                    store.read_chunk(content_id, chunk_index)  # bad on disk: marked, raises
                    raise
                _write_all(output, out[:length])
                _start_writeback(output, chunk_index * (chunk_size - TAG_SIZE), length)
                if pending is not None:
                    pending.result()  # frees the other buffer for the next chunk
                pending = pool.submit(digest.update, out[:length])
            if pending is not None:
                pending.result()
    finally:
        os.close(source)
    return digest.digest()


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
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        advise(descriptor, offset, length, os.POSIX_FADV_DONTNEED)


def _write_all(descriptor: int, data: memoryview) -> None:
    while data:
        data = data[os.write(descriptor, data) :]


def _already_written(path: Path, sealed: SealedContent) -> bool:
    try:
        if path.stat().st_size != sealed.plaintext_size:
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as existing:
            while block := existing.read(_READ_BLOCK):
                digest.update(block)
    except OSError:
        return False
    return digest.digest() == sealed.plaintext_sha256


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
