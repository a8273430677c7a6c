"""The manifest's canonical bytes, content ID and signatures."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.core.errors import (
    ChunkHashMismatch,
    ContentIdMismatch,
    ManifestMalformed,
    ManifestTampered,
    ManifestTruncated,
    ManifestUnsigned,
    UnknownSigner,
)
from shoal.core.ids import ContentId
from shoal.core.manifest import decode_body, decode_manifest_file
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey, verify_manifest_file

PACKAGE = bytes(range(256)) * 300  # 76,800 bytes: one full 64 KiB chunk and a short one
CHUNK = 65536
SIGNER = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))

# Frozen from the format in shoal.core.manifest; a change here is a protocol change.
GOLDEN_CONTENT_ID = "fc79759bd6e07542891c0211e40482f8ac95da94d11dec7d0a1ee198c1838855"


def expected_body() -> bytes:
    """The canonical body, built by hand from the documented layout."""
    return (
        b"SHMF"
        + b"\x01"
        + struct.pack(">Q", len(PACKAGE))
        + struct.pack(">I", CHUNK)
        + hashlib.sha256(PACKAGE).digest()
        + hashlib.sha256(PACKAGE[:CHUNK]).digest()
        + hashlib.sha256(PACKAGE[CHUNK:]).digest()
    )


def test_canonical_body_matches_the_documented_layout() -> None:
    manifest = pack_bytes(PACKAGE, CHUNK)
    assert manifest.body() == expected_body()
    assert manifest.content_id.digest == hashlib.sha256(expected_body()).digest()


def test_content_id_is_frozen() -> None:
    assert pack_bytes(PACKAGE, CHUNK).content_id.hex == GOLDEN_CONTENT_ID


def test_signature_trailer_layout_and_determinism() -> None:
    manifest = pack_bytes(PACKAGE, CHUNK)
    encoded = SIGNER.sign(manifest).encode()
    trailer = encoded[len(expected_body()) :]
    assert trailer[:4] == b"SHSG"
    assert trailer[4:12] == SIGNER.verify_key.key_id
    assert len(trailer) == 4 + 8 + 64
    SIGNER.verify_key.public_key.verify(trailer[12:], expected_body())
    assert encoded == SIGNER.sign(manifest).encode()  # Ed25519 is deterministic


def test_a_signed_manifest_verifies_and_decodes_to_the_same_fields() -> None:
    manifest = pack_bytes(PACKAGE, CHUNK)
    verified = verify_manifest_file(SIGNER.sign(manifest).encode(), [SIGNER.verify_key])
    assert verified == manifest
    assert verified.content_id == manifest.content_id


def test_every_single_byte_change_in_a_signed_manifest_is_refused() -> None:
    encoded = SIGNER.sign(pack_bytes(PACKAGE, CHUNK)).encode()
    for position in range(len(encoded)):
        tampered = bytearray(encoded)
        tampered[position] ^= 0x01
        with pytest.raises((ManifestTampered, ManifestMalformed, ManifestTruncated, UnknownSigner)):
            verify_manifest_file(bytes(tampered), [SIGNER.verify_key])


def test_a_changed_chunk_hash_is_reported_as_tampering() -> None:
    encoded = bytearray(SIGNER.sign(pack_bytes(PACKAGE, CHUNK)).encode())
    encoded[60] ^= 0xFF  # inside the first chunk hash
    with pytest.raises(ManifestTampered, match="changed after signing"):
        verify_manifest_file(bytes(encoded), [SIGNER.verify_key])


def test_every_truncation_is_refused() -> None:
    encoded = SIGNER.sign(pack_bytes(PACKAGE, CHUNK)).encode()
    body_length = len(expected_body())
    for length in range(len(encoded)):
        if length == body_length:
            with pytest.raises(ManifestUnsigned):
                verify_manifest_file(encoded[:length], [SIGNER.verify_key])
            continue
        with pytest.raises((ManifestTruncated, ManifestMalformed)):
            verify_manifest_file(encoded[:length], [SIGNER.verify_key])


def test_an_unsigned_manifest_is_refused_when_a_signature_is_required() -> None:
    with pytest.raises(ManifestUnsigned, match="not signed"):
        verify_manifest_file(expected_body(), [SIGNER.verify_key])


def test_a_manifest_signed_by_another_key_is_refused() -> None:
    other = SigningKey.generate()
    with pytest.raises(UnknownSigner, match="not trusted"):
        verify_manifest_file(other.sign(pack_bytes(PACKAGE, CHUNK)).encode(), [SIGNER.verify_key])


def test_decode_refuses_bad_magic_version_and_chunk_size() -> None:
    body = expected_body()
    with pytest.raises(ManifestMalformed, match="bad magic"):
        decode_manifest_file(b"XXXX" + body[4:])
    with pytest.raises(ManifestMalformed, match="version 2"):
        decode_manifest_file(body[:4] + b"\x02" + body[5:])
    with pytest.raises(ManifestMalformed, match="chunk size"):
        decode_manifest_file(body[:13] + struct.pack(">I", 1000) + body[17:])


def test_decode_body_checks_the_expected_content_id() -> None:
    body = expected_body()
    assert decode_body(body, ContentId.from_hex(GOLDEN_CONTENT_ID)).size == len(PACKAGE)
    with pytest.raises(ContentIdMismatch):
        decode_body(body, ContentId(bytes(32)))


def test_chunk_verification_refuses_changed_or_short_bytes() -> None:
    manifest = pack_bytes(PACKAGE, CHUNK)
    manifest.verify_chunk(1, PACKAGE[CHUNK:])
    with pytest.raises(ChunkHashMismatch, match="does not match"):
        manifest.verify_chunk(0, b"\xff" + PACKAGE[1:CHUNK])
    with pytest.raises(ChunkHashMismatch, match="bytes, expected"):
        manifest.verify_chunk(1, PACKAGE[CHUNK:-1])
