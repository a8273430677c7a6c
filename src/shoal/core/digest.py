"""SHA-256 of chunks and whole files, by the OpenSSL that cryptography bundles.

Every hash of chunk-sized data a client computes (a chunk on receipt, on serving, a file
at import or repair, a manifest body) goes through ``sha256`` or ``Sha256`` here, not
``hashlib``. A device's ``shoal client run`` does not load hashlib's OpenSSL binding
(``_hashlib``, which maps the system's libcrypto: ~3.5 MB of an idle client's 40 MB
budget; ``shoal.client.lean_imports``), so there ``hashlib.sha256`` is CPython's
built-in code, about 5x slower on a chunk (21 against 3.8 ms per MiB on the development
machine). The cryptography library is loaded by every role anyway (signatures,
sealing); its SHA-256 is as fast as hashlib's OpenSSL one and releases the GIL while it
hashes, so a disk thread's hashing does not stop the event loop. Small inputs (a key, an
HMAC of a control message) may keep ``hashlib``: the built-in code costs microseconds.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

Buffer = bytes | bytearray | memoryview


def sha256(data: Buffer) -> bytes:
    """The SHA-256 digest of ``data``."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


class Sha256:
    """An incremental SHA-256 (a whole file read block by block)."""

    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = hashes.Hash(hashes.SHA256())

    def update(self, data: Buffer) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        """The digest of everything given so far (once: the hash is finished)."""
        return self._hash.finalize()
