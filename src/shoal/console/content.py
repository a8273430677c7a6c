"""Where the console keeps uploaded packages and their signed manifests.

Layout under ``DATA_DIR/content``::

    tmp/                 uploads being received (removed at start: never acknowledged)
    CONTENT_ID.data      the package (a confidential one encrypted), complete and fsynced
    CONTENT_ID.manifest  its manifest, signed by the console

An upload is streamed to ``tmp/``, fsynced, packed (``seal``) (``shoal.core.packing.pack_stream``
reads the finished file once more, from the page cache), its manifest signed and
written durably, and only then renamed to ``CONTENT_ID.data`` and the directory
fsynced. The caller commits the database row after ``publish`` returns, so a package is
visible only once every byte is on disk; files left without a row by a crash are
removed by ``remove_orphans`` at the next start.

A confidential upload is sealed with ``seal_confidential`` instead: the received file is
encrypted chunk by chunk into a second file in ``tmp/`` while it is packed
(``shoal.core.packing.pack_sealed_stream``), the plaintext is deleted, and what is
published, signed and served is the ciphertext.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shoal.assignments import ManifestRef, manifest_ref
from shoal.core.files import fsync_directory, write_durably
from shoal.core.manifest import Manifest, ManifestFile
from shoal.core.packing import SealedPackage, pack_sealed_stream, pack_stream
from shoal.core.sealing import ChunkCipher
from shoal.core.signing import SigningKey

log = logging.getLogger("shoal.console")


@dataclass(frozen=True, slots=True)
class StoredContent:
    """A package now durable in the content directory."""

    manifest: Manifest
    manifest_file: ManifestFile
    data_path: Path


class Upload:
    """One upload being received into a temporary file."""

    def __init__(self, directory: ContentDirectory) -> None:
        self._directory = directory
        descriptor, name = tempfile.mkstemp(dir=directory.temporary, suffix=".upload")
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(descriptor, "wb")
        self.received = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(data)
        self.received += len(data)

    def seal(self, chunk_size: int, signing_key: SigningKey) -> ManifestFile:
        """Make the received bytes durable, pack them and sign the manifest.

        The slow part (one read of the whole file); needs no lock.
        """
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        with open(self.path, "rb", buffering=0) as package:
            manifest = pack_stream(package, chunk_size)
        return signing_key.sign(manifest)

    def seal_confidential(
        self, chunk_size: int, signing_key: SigningKey, content_key: bytes
    ) -> tuple[ManifestFile, SealedPackage]:
        """Encrypt the received bytes under ``content_key`` while packing them; keep only
        the ciphertext (fsynced) and sign its manifest. Needs no lock."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        cipher = ChunkCipher(content_key, chunk_size, self.received)
        plaintext_path = self.path
        descriptor, name = tempfile.mkstemp(dir=self._directory.temporary, suffix=".sealed")
        self.path = Path(name)  # discard() removes the ciphertext from now on
        try:
            with (
                open(plaintext_path, "rb", buffering=0) as plaintext,
                os.fdopen(descriptor, "wb") as sealed,
            ):
                package = pack_sealed_stream(plaintext, sealed, cipher)
                sealed.flush()
                os.fsync(sealed.fileno())
        finally:
            plaintext_path.unlink(missing_ok=True)
        return signing_key.sign(package.manifest), package

    def publish(self, manifest_file: ManifestFile) -> StoredContent:
        """Write the manifest, move the package into place and fsync the directory.

        The caller holds the content lock and commits the database row right after.
        """
        manifest = manifest_file.manifest
        content_id = manifest.content_id.hex
        data_path = self._directory.data_path(content_id)
        write_durably(self._directory.manifest_path(content_id), manifest_file.encode())
        if data_path.exists():
            # Same bytes uploaded before (another application or version): keep one copy.
            self.path.unlink()
        else:
            os.replace(self.path, data_path)
        fsync_directory(self._directory.root)
        return StoredContent(manifest, manifest_file, data_path)

    def discard(self) -> None:
        """Drop a failed or abandoned upload."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class ContentDirectory:
    """The packages and manifests of one console."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temporary = root / "tmp"
        self.temporary.mkdir(parents=True, exist_ok=True)
        self._refs: dict[str, tuple[tuple[int, int, int], ManifestRef]] = {}

    def begin_upload(self) -> Upload:
        return Upload(self)

    def free_bytes(self) -> int:
        """Bytes free for packages on the file system of the content directory."""
        return shutil.disk_usage(self.root).free

    def data_path(self, content_id: str) -> Path:
        return self.root / f"{content_id}.data"

    def manifest_path(self, content_id: str) -> Path:
        return self.root / f"{content_id}.manifest"

    def manifest_ref(self, content_id: str) -> ManifestRef | None:
        """SHA-256 and length of the signed manifest file (the assignment document names
        it); None if it is missing. Hashed again only when the file changed."""
        path = self.manifest_path(content_id)
        try:
            stat = path.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            cached = self._refs.get(content_id)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            ref = manifest_ref(path.read_bytes())
        except OSError:
            return None
        self._refs[content_id] = (stamp, ref)
        return ref

    def replace_manifest(self, content_id: str, manifest_file: bytes) -> None:
        """Write a manifest signed again (key rotation) in place, durably."""
        self._refs.pop(content_id, None)
        write_durably(self.manifest_path(content_id), manifest_file)

    def remove(self, content_id: str) -> None:
        """Delete a package and its manifest (the caller checks nothing uses them)."""
        self._refs.pop(content_id, None)
        self.data_path(content_id).unlink(missing_ok=True)
        self.manifest_path(content_id).unlink(missing_ok=True)

    def clear_temporary(self) -> int:
        """Remove uploads that never finished (a crash or kill); return how many."""
        removed = 0
        for leftover in self.temporary.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        for leftover in self.root.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def remove_orphans(self, known_content_ids: Iterable[str]) -> int:
        """Remove packages no database row refers to (written, then the console died)."""
        known = set(known_content_ids)
        removed = 0
        for path in [*self.root.glob("*.data"), *self.root.glob("*.manifest")]:
            if path.stem not in known:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d content files left without a database row", removed)
        return removed
