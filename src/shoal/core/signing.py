"""Ed25519 keys and manifest signatures.

The console signs every manifest; clients and servers trust a set of public keys and
refuse a manifest that is unsigned, signed by another key, or changed after signing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shoal.core.errors import KeyFileError, ManifestTampered, ManifestUnsigned, UnknownSigner
from shoal.core.files import write_private
from shoal.core.manifest import (
    KEY_ID_SIZE,
    Manifest,
    ManifestFile,
    SignatureTrailer,
    decode_manifest_file,
)


def key_id_of(public_key: Ed25519PublicKey) -> bytes:
    """First 8 bytes of the SHA-256 of the raw public key: names a signer in a trailer."""
    return hashlib.sha256(public_key.public_bytes_raw()).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key that signs manifests."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Load a PEM (PKCS#8) Ed25519 private key; ``KeyFileError`` says what is wrong."""
        from cryptography.hazmat.primitives import serialization  # PEM: console and server

        data = _read_key_file(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise KeyFileError(f"{path}: not a PEM private key ({error})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an Ed25519 private key")
        return cls(key)

    def save(self, path: Path) -> None:
        """Write the key as PEM, readable by its owner only."""
        from cryptography.hazmat.primitives import serialization

        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(path, pem)

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.private_key.public_key())

    def sign(self, manifest: Manifest) -> ManifestFile:
        """Return the manifest with a signature trailer over its canonical body."""
        signature = self.private_key.sign(manifest.body())
        trailer = SignatureTrailer(key_id=self.verify_key.key_id, signature=signature)
        return ManifestFile(manifest, trailer)


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """An Ed25519 public key trusted to sign manifests."""

    public_key: Ed25519PublicKey

    @classmethod
    def from_raw(cls, raw: bytes) -> VerifyKey:
        try:
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as error:
            raise KeyFileError(f"not a raw Ed25519 public key: {error}") from None

    @classmethod
    def load(cls, path: Path) -> VerifyKey:
        """Load a PEM public key, or derive it from a PEM private key."""
        from cryptography.hazmat.primitives import serialization

        data = _read_key_file(path)
        if b"PRIVATE KEY" in data:
            return SigningKey.load(path).verify_key
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as error:
            raise KeyFileError(f"{path}: not a PEM public key ({error})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: not an Ed25519 public key")
        return cls(key)

    def save(self, path: Path) -> None:
        from cryptography.hazmat.primitives import serialization

        path.write_bytes(
            self.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @property
    def raw(self) -> bytes:
        return self.public_key.public_bytes_raw()

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.public_key)


def verify_manifest_file(data: bytes, trusted: Iterable[VerifyKey]) -> Manifest:
    """Decode a manifest file and check its signature against the trusted keys.

    Raises ``ManifestTruncated``/``ManifestMalformed`` for bad bytes, ``ManifestUnsigned``
    when there is no signature, ``UnknownSigner`` when no trusted key has the trailer's
    key ID, and ``ManifestTampered`` when the signature does not match the body.
    """
    manifest_file = decode_manifest_file(data)
    trailer = manifest_file.trailer
    if trailer is None:
        raise ManifestUnsigned(f"manifest {manifest_file.manifest.content_id.short} is not signed")
    for key in trusted:
        if key.key_id == trailer.key_id:
            try:
                key.public_key.verify(trailer.signature, manifest_file.manifest.body())
            except InvalidSignature:
                raise ManifestTampered(
                    f"manifest {manifest_file.manifest.content_id.short}: signature does "
                    "not match its content (changed after signing)"
                ) from None
            return manifest_file.manifest
    raise UnknownSigner(
        f"manifest {manifest_file.manifest.content_id.short} is signed by key "
        f"{trailer.key_id.hex()}, which is not trusted here"
    )


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a directory, not a key file") from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read key file ({error.strerror})") from None
