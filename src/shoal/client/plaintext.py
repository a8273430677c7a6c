"""The plaintext of a confidential download, written outside the cache.

The cache keeps the ciphertext: it is what the manifest describes, what peers are
served and what the store verifies. Once a confidential download is complete, the
client opens its sealed content key with its device key and decrypts the chunks into
``DATA_DIR/packages/CONTENT_ID`` (directory mode 0700, file mode 0600): written to a
temporary file, fsynced, checked against the plaintext SHA-256 the console signed, and
only then renamed into place, so a crash never leaves a partial or wrong package under
that name. Blocking file I/O: the shell runs it in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from shoal.assignments import SealedContent
from shoal.core.errors import ContentHashMismatch
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest
from shoal.core.sealing import ChunkCipher, ConfidentialError, open_content_key

PACKAGES_DIRECTORY = "packages"
_READ_BLOCK = 1 << 20


class CiphertextSource(Protocol):
    """What decryption needs of the cache (``shoal.store.ContentStore``)."""

    def manifest(self, content_id: ContentId) -> Manifest: ...
    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes: ...


def write_plaintext(
    store: CiphertextSource,
    content_id: ContentId,
    sealed: SealedContent,
    device_key: DeviceKey,
    directory: Path,
) -> Path:
    """Decrypt a complete confidential content from ``store`` into ``directory``.

    Returns the plaintext's path. Raises ``ConfidentialError`` when the key is not this
    device's or a chunk does not open, ``ContentHashMismatch`` when the result is not
    the plaintext the console packed. An existing file with the right SHA-256 is kept.
    """
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
        digest = hashlib.sha256()
        with os.fdopen(descriptor, "wb") as output:
            for chunk_index in range(cipher.chunk_count):
                plaintext = cipher.decrypt(chunk_index, store.read_chunk(content_id, chunk_index))
                digest.update(plaintext)
                output.write(plaintext)
            output.flush()
            os.fsync(output.fileno())
        if digest.digest() != sealed.plaintext_sha256:
            raise ContentHashMismatch(
                f"{content_id.short}: the decrypted package does not match its SHA-256"
            )
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return target


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
