"""The manifest: everything the peer-to-peer network knows about a package.

Theory of operation
-------------------
A manifest holds the package size, the SHA-256 of the whole package, the chunk size and
one SHA-256 per chunk: nothing else (no name, no vendor). It has exactly one byte
encoding, the *canonical body* (all integers big-endian)::

    offset  size  field
    0       4     magic  b"SHMF"
    4       1     format version (1)
    5       8     package size in bytes
    13      4     chunk size in bytes (a power of two, 64 KiB .. 16 MiB)
    17      32    SHA-256 of the whole package
    49      32*n  SHA-256 of each chunk, n = ceil(size / chunk size)

The content ID is the SHA-256 of that body, so two parties who agree on a content ID
agree on every byte of every chunk.

A manifest file is the body, optionally followed by one signature trailer::

    0   4   magic b"SHSG"
    4   8   key ID of the signer (first 8 bytes of SHA-256 of its raw public key)
    12  64  Ed25519 signature over the canonical body

``decode_manifest_file`` reads either form; ``verify_manifest_file`` additionally
requires a trailer made by a trusted key.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from shoal.core.chunking import chunk_count, chunk_length, validate_chunk_size
from shoal.core.digest import sha256
from shoal.core.errors import (
    ChunkHashMismatch,
    ContentIdMismatch,
    InvalidChunkSize,
    ManifestMalformed,
    ManifestTruncated,
)
from shoal.core.ids import DIGEST_SIZE, ContentId

MANIFEST_MAGIC = b"SHMF"
MANIFEST_FORMAT_VERSION = 1
SIGNATURE_MAGIC = b"SHSG"
KEY_ID_SIZE = 8
SIGNATURE_SIZE = 64

_HEADER = struct.Struct(">4sBQI32s")
HEADER_SIZE = _HEADER.size
SIGNATURE_TRAILER_SIZE = len(SIGNATURE_MAGIC) + KEY_ID_SIZE + SIGNATURE_SIZE
MAX_PACKAGE_SIZE = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Manifest:
    """A package's size, whole-file hash, chunk size and chunk hashes."""

    size: int
    sha256: bytes
    chunk_size: int
    chunk_hashes: tuple[bytes, ...]
    content_id: ContentId = field(init=False, compare=False)

    def __post_init__(self) -> None:
        validate_chunk_size(self.chunk_size)
        if not 0 <= self.size <= MAX_PACKAGE_SIZE:
            raise ManifestMalformed(f"package size {self.size} out of range")
        if len(self.sha256) != DIGEST_SIZE:
            raise ManifestMalformed("package SHA-256 must be 32 bytes")
        expected = chunk_count(self.size, self.chunk_size)
        if len(self.chunk_hashes) != expected:
            raise ManifestMalformed(f"{len(self.chunk_hashes)} chunk hashes for {expected} chunks")
        if any(len(digest) != DIGEST_SIZE for digest in self.chunk_hashes):
            raise ManifestMalformed("every chunk hash must be 32 bytes")
        object.__setattr__(self, "content_id", ContentId(sha256(self.body())))

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_hashes)

    def chunk_length(self, chunk_index: int) -> int:
        """Length of chunk ``chunk_index``; IndexError when out of range."""
        return chunk_length(self.size, self.chunk_size, chunk_index)

    def verify_chunk(self, chunk_index: int, data: bytes | bytearray | memoryview) -> None:
        """Raise ``ChunkHashMismatch`` unless ``data`` is exactly chunk ``chunk_index``."""
        expected_length = self.chunk_length(chunk_index)
        if len(data) != expected_length:
            raise ChunkHashMismatch(
                f"chunk {chunk_index} of {self.content_id.short} is {len(data)} bytes, "
                f"expected {expected_length}"
            )
        if sha256(data) != self.chunk_hashes[chunk_index]:
            raise ChunkHashMismatch(
                f"chunk {chunk_index} of {self.content_id.short} does not match its hash"
            )

    def body(self) -> bytes:
        """The canonical encoding; its SHA-256 is the content ID."""
        header = _HEADER.pack(
            MANIFEST_MAGIC, MANIFEST_FORMAT_VERSION, self.size, self.chunk_size, self.sha256
        )
        return header + b"".join(self.chunk_hashes)

    def summary(self) -> dict[str, object]:
        """The fields a user sees, as JSON-ready values."""
        return {
            "content_id": self.content_id.hex,
            "size": self.size,
            "sha256": self.sha256.hex(),
            "chunk_size": self.chunk_size,
            "chunks": self.chunk_count,
        }


def body_length(size: int, chunk_size: int) -> int:
    """Length of the canonical body of a manifest with these fields."""
    return HEADER_SIZE + DIGEST_SIZE * chunk_count(size, chunk_size)


def decode_body(data: bytes, expected: ContentId | None = None) -> Manifest:
    """Decode exactly one canonical body (no trailer).

    Raises ``ManifestTruncated`` when ``data`` is short, ``ManifestMalformed`` when it is
    not a manifest or has trailing bytes, ``ContentIdMismatch`` when ``expected`` is
    given and differs.
    """
    manifest, rest = _decode_prefix(data)
    if rest:
        raise ManifestMalformed(f"{len(rest)} unexpected bytes after the manifest body")
    if expected is not None and manifest.content_id != expected:
        raise ContentIdMismatch(
            f"manifest hashes to {manifest.content_id.short}, expected {expected.short}"
        )
    return manifest


def _decode_prefix(data: bytes) -> tuple[Manifest, bytes]:
    """Decode the body at the start of ``data``; return it and the bytes after it."""
    if len(data) < HEADER_SIZE:
        if not MANIFEST_MAGIC.startswith(data[: len(MANIFEST_MAGIC)]):
            raise ManifestMalformed("not a shoal manifest (bad magic)")
        raise ManifestTruncated(
            f"manifest is {len(data)} bytes, shorter than its {HEADER_SIZE}-byte header"
        )
    magic, version, size, chunk_size, sha256 = _HEADER.unpack_from(data)
    if magic != MANIFEST_MAGIC:
        raise ManifestMalformed("not a shoal manifest (bad magic)")
    if version != MANIFEST_FORMAT_VERSION:
        raise ManifestMalformed(
            f"manifest format version {version} is not supported (this build reads "
            f"version {MANIFEST_FORMAT_VERSION})"
        )
    try:
        validate_chunk_size(chunk_size)
    except InvalidChunkSize as error:
        raise ManifestMalformed(f"manifest has an invalid chunk size: {error}") from None
    if size > MAX_PACKAGE_SIZE:
        raise ManifestMalformed(f"package size {size} out of range")
    end = body_length(size, chunk_size)
    if len(data) < end:
        raise ManifestTruncated(f"manifest is {len(data)} bytes, its fields say {end}")
    hashes = tuple(data[offset : offset + DIGEST_SIZE] for offset in range(HEADER_SIZE, end, 32))
    manifest = Manifest(size=size, sha256=sha256, chunk_size=chunk_size, chunk_hashes=hashes)
    return manifest, data[end:]


@dataclass(frozen=True, slots=True)
class SignatureTrailer:
    """Who signed a manifest body, and the signature."""

    key_id: bytes
    signature: bytes

    def encode(self) -> bytes:
        return SIGNATURE_MAGIC + self.key_id + self.signature


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """A decoded manifest file: the manifest and, when signed, its signature trailer."""

    manifest: Manifest
    trailer: SignatureTrailer | None

    def encode(self) -> bytes:
        body = self.manifest.body()
        return body if self.trailer is None else body + self.trailer.encode()


def decode_manifest_file(data: bytes) -> ManifestFile:
    """Decode a manifest file, signed or not, without checking any signature."""
    manifest, rest = _decode_prefix(data)
    if not rest:
        return ManifestFile(manifest, None)
    if not SIGNATURE_MAGIC.startswith(rest[: len(SIGNATURE_MAGIC)]):
        raise ManifestMalformed("unexpected bytes after the manifest body (bad trailer magic)")
    if len(rest) < SIGNATURE_TRAILER_SIZE:
        raise ManifestTruncated(
            f"signature trailer is {len(rest)} bytes, expected {SIGNATURE_TRAILER_SIZE}"
        )
    if len(rest) > SIGNATURE_TRAILER_SIZE:
        raise ManifestMalformed(
            f"{len(rest) - SIGNATURE_TRAILER_SIZE} unexpected bytes after the signature"
        )
    key_start = len(SIGNATURE_MAGIC)
    key_id = rest[key_start : key_start + KEY_ID_SIZE]
    signature = rest[key_start + KEY_ID_SIZE :]
    return ManifestFile(manifest, SignatureTrailer(key_id=key_id, signature=signature))


def build_manifest(
    size: int, sha256: bytes, chunk_size: int, chunk_hashes: Iterable[bytes]
) -> Manifest:
    """Build a manifest from its fields (validated)."""
    return Manifest(
        size=size, sha256=sha256, chunk_size=chunk_size, chunk_hashes=tuple(chunk_hashes)
    )
