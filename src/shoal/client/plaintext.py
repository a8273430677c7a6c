"""The plaintext of a confidential download, written outside the cache.

The cache keeps the ciphertext: it is what the manifest describes, what peers are
served and what the store verifies. Once a confidential download is complete, the
client opens its sealed content key with its device key and decrypts the chunks into
``DATA_DIR/packages/CONTENT_ID`` (directory mode 0700, file mode 0600): written to a
temporary file, fsynced, and only then renamed into place, so a crash never leaves a
partial or wrong package under that name. Blocking file I/O: the shell runs it in a
worker thread.

Why no SHA-256 of the whole plaintext: every ciphertext chunk was checked against the
console-signed manifest's chunk hash before the cache wrote it, and every plaintext
chunk is authenticated by its AES-GCM tag (bound to its index and the layout) under a
key only the console generated and sealed to this device in the console-signed
document, so the plaintext is exactly what the console encrypted; the sizes are still
checked. The document's ``plaintext_sha256`` stays signed, shown and usable by audits;
here it only tells whether a file already in place can be kept.

Cost: each ciphertext chunk is read from the cache file into a reused buffer and
authenticated by its AES-GCM tag (the tag covers every byte, so the cache's SHA-256
re-check would add nothing; a chunk whose tag fails is handed to the cache's
``read_chunk``, which notices a chunk gone bad on disk and marks it for download
again).

It need not wait for the whole download: given ``wait_for_chunk`` (or ``chunk_ready``,
polled), it decrypts each chunk as soon as the cache holds it verified, in order, while
the rest is still on its way, so the work overlaps the transfer. ``wait_for_chunk``
blocks on the writer's notification, not on a sleep, so the last chunk is decrypted the
moment it is written, not up to a poll period later.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from shoal.assignments import SealedContent
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
    device's, the sizes disagree or a chunk does not open (its GCM tag fails); nothing
    is then left under the name. An existing file with the right SHA-256 is kept.
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
            _decrypt_file(store, content_id, cipher, output.fileno(), wait_for_chunk, stopped)
            os.fsync(output.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return target


def _decrypt_file(
    store: CiphertextSource,
    content_id: ContentId,
    cipher: ChunkCipher,
    output: int,
    wait_for_chunk: ChunkWait | None,
    stopped: Stopped | None,
) -> None:
    """Decrypt every chunk, each authenticated by its GCM tag, into ``output``."""
    chunk_size = cipher.chunk_size
    sealed_in = bytearray(chunk_size)
    plain_out = memoryview(bytearray(chunk_size - TAG_SIZE))
    source = os.open(store.data_path(content_id), os.O_RDONLY)
    try:
        for chunk_index in range(cipher.chunk_count):
            if wait_for_chunk is not None:
                _wait_for(chunk_index, wait_for_chunk, stopped)
            wanted = cipher.plaintext_length(chunk_index) + TAG_SIZE
            ciphertext = memoryview(sealed_in)[:wanted]
            if os.preadv(source, [ciphertext], chunk_index * chunk_size) != wanted:
                store.read_chunk(content_id, chunk_index)  # names what is missing
                raise ChunkDecryptionFailed(f"chunk {chunk_index} is not in the cache")
            try:
                length = cipher.decrypt_into(chunk_index, ciphertext, plain_out)
            except ChunkDecryptionFailed:
                store.read_chunk(content_id, chunk_index)  # bad on disk: marked, raises
                raise
            _write_all(output, plain_out[:length])
            _start_writeback(output, chunk_index * (chunk_size - TAG_SIZE), length)
    finally:
        os.close(source)


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
