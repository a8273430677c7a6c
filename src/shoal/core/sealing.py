"""Confidential content: per-chunk AES-256-GCM, and content keys sealed to devices.

Theory of operation
-------------------
A confidential version gets its own random 256-bit *content key*. The console encrypts
the package chunk by chunk with AES-256-GCM (NIST SP 800-38D) and packs the
*ciphertext*: the manifest, the content ID and every chunk hash describe the
ciphertext, so peers verify and relay chunks they cannot read.

Chunk layout: a manifest chunk of ``chunk_size`` bytes (a power of two) carries
``chunk_size - 16`` bytes of plaintext and the 16-byte GCM tag::

    plaintext   | P0 (chunk_size-16) | P1 (chunk_size-16) | ... | Pn-1 (<= chunk_size-16) |
    ciphertext  | C0 || T0 (chunk_size) | C1 || T1 (chunk_size) | ... | Cn-1 || Tn-1       |

so the chunk sizes the network sees stay the powers of two the transfer and the cache
are built for (aligned reads, one chunk = one request), and a ciphertext chunk never
straddles two plaintext chunks: a client opens each chunk alone.

Per chunk (SP 800-38D):

- the 96-bit IV is the deterministic construction of §8.2.1: a fixed field of 4 zero
  bytes and an invocation field of the chunk index (8 bytes, big-endian). Each chunk
  index is encrypted once under a key, and every version has a fresh key, so an
  (IV, key) pair is never used twice (§8.2, the rule GCM's security rests on);
- the additional authenticated data binds the chunk index, the chunk size and the
  plaintext size, so a chunk cannot be moved to another index, and a package cannot be
  truncated or extended, without the tag failing; the key itself binds the version.

Content keys reach a device sealed to its X25519 public key with HPKE (RFC 9180, base
mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM): a fresh ephemeral X25519
key per seal (RFC 7748 §6.1), HKDF (RFC 5869) over the shared secret, AES-256-GCM over
the content key. The HPKE ``info`` binds the device ID and the content ID (RFC 9180
§8.1), so a sealed key opens only for that device and that content.

At rest in the console, content keys are wrapped (AES-256-GCM, random 96-bit IV, SP
800-38D §8.2.2) under the console's key-wrapping key, with the content ID as AAD.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from shoal.core.chunking import chunk_count, chunk_size_for, validate_chunk_size
from shoal.core.errors import ShoalError
from shoal.core.identity import DeviceKey, device_id_of, public_key_from_raw

CONTENT_KEY_SIZE = 32
TAG_SIZE = 16
NONCE_SIZE = 12
WRAP_NONCE_SIZE = 12
SEALED_KEY_SIZE = 32 + CONTENT_KEY_SIZE + TAG_SIZE
"""An HPKE encapsulated X25519 key (32 bytes), the content key and its tag."""
WRAPPED_KEY_SIZE = WRAP_NONCE_SIZE + CONTENT_KEY_SIZE + TAG_SIZE

_CHUNK_AAD_LABEL = b"shoal confidential chunk v1"
_CHUNK_AAD = struct.Struct(">QIQ")  # plaintext size, chunk size, chunk index
_SEAL_INFO_LABEL = b"shoal sealed content key v1"
_WRAP_AAD_LABEL = b"shoal wrapped content key v1"
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)


class ConfidentialError(ShoalError):
    """Confidential content that cannot be opened. Subclasses name the cause."""


class ChunkDecryptionFailed(ConfidentialError):
    """A ciphertext chunk whose GCM tag does not verify under this key, index and layout."""


class ContentKeyUnsealFailed(ConfidentialError):
    """A sealed content key that this device's key cannot open (not sealed to it)."""


def new_content_key() -> bytes:
    """A fresh random 256-bit content key (one per confidential version)."""
    return os.urandom(CONTENT_KEY_SIZE)


def plaintext_chunk_size(chunk_size: int) -> int:
    """Plaintext bytes carried by one ciphertext chunk of ``chunk_size`` bytes."""
    return validate_chunk_size(chunk_size) - TAG_SIZE


def sealed_package_size(plaintext_size: int, chunk_size: int) -> int:
    """Size of the ciphertext of ``plaintext_size`` bytes: one tag per chunk."""
    return plaintext_size + TAG_SIZE * chunk_count(plaintext_size, plaintext_chunk_size(chunk_size))


def confidential_chunk_size(plaintext_size: int) -> int:
    """The default chunk size of a confidential package of ``plaintext_size`` bytes: as
    ``chunk_size_for`` its ciphertext (one tag more per chunk)."""
    return chunk_size_for(sealed_package_size(plaintext_size, chunk_size_for(plaintext_size)))


def chunk_nonce(chunk_index: int) -> bytes:
    """The 96-bit GCM IV of chunk ``chunk_index`` (SP 800-38D §8.2.1)."""
    if not 0 <= chunk_index < 1 << 64:
        raise ValueError(f"chunk index {chunk_index} out of range")
    return bytes(4) + chunk_index.to_bytes(8, "big")


def chunk_aad(chunk_index: int, chunk_size: int, plaintext_size: int) -> bytes:
    """The additional authenticated data of chunk ``chunk_index``."""
    return _CHUNK_AAD_LABEL + _CHUNK_AAD.pack(plaintext_size, chunk_size, chunk_index)


@dataclass(frozen=True, slots=True)
class ChunkCipher:
    """Encrypts and decrypts the chunks of one confidential version.

    ``chunk_size`` is the ciphertext (manifest) chunk size; ``plaintext_size`` the size
    of the package before encryption.
    """

    key: bytes = field(repr=False)
    chunk_size: int
    plaintext_size: int
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) != CONTENT_KEY_SIZE:
            raise ValueError(f"a content key has {CONTENT_KEY_SIZE} bytes, not {len(self.key)}")
        validate_chunk_size(self.chunk_size)
        if self.plaintext_size < 0:
            raise ValueError("plaintext size must not be negative")
        object.__setattr__(self, "_aead", AESGCM(self.key))

    @property
    def plaintext_chunk_size(self) -> int:
        return self.chunk_size - TAG_SIZE

    @property
    def chunk_count(self) -> int:
        return chunk_count(self.plaintext_size, self.plaintext_chunk_size)

    @property
    def sealed_size(self) -> int:
        return sealed_package_size(self.plaintext_size, self.chunk_size)

    def plaintext_length(self, chunk_index: int) -> int:
        """Plaintext bytes of chunk ``chunk_index``; IndexError when out of range."""
        count = self.chunk_count
        if not 0 <= chunk_index < count:
            raise IndexError(f"chunk index {chunk_index} out of range 0..{count - 1}")
        step = self.plaintext_chunk_size
        return min(step, self.plaintext_size - chunk_index * step)

    def encrypt(self, chunk_index: int, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Ciphertext and tag of chunk ``chunk_index`` (its plaintext must be whole)."""
        expected = self.plaintext_length(chunk_index)
        if len(plaintext) != expected:
            raise ValueError(
                f"chunk {chunk_index} has {len(plaintext)} plaintext bytes, expected {expected}"
            )
        return self._aead.encrypt(
            chunk_nonce(chunk_index),
            plaintext,
            chunk_aad(chunk_index, self.chunk_size, self.plaintext_size),
        )

    def encrypt_into(
        self, chunk_index: int, plaintext: bytes | bytearray | memoryview, out: memoryview
    ) -> int:
        """``encrypt`` into ``out`` (no allocation); returns the ciphertext length."""
        expected = self.plaintext_length(chunk_index)
        if len(plaintext) != expected:
            raise ValueError(
                f"chunk {chunk_index} has {len(plaintext)} plaintext bytes, expected {expected}"
            )
        self._aead.encrypt_into(
            chunk_nonce(chunk_index),
            plaintext,
            chunk_aad(chunk_index, self.chunk_size, self.plaintext_size),
            out[: expected + TAG_SIZE],
        )
        return expected + TAG_SIZE

    def decrypt_into(
        self, chunk_index: int, ciphertext: bytes | bytearray | memoryview, out: memoryview
    ) -> int:
        """``decrypt`` into ``out`` (no allocation); returns the plaintext length."""
        length = self.plaintext_length(chunk_index)
        if len(ciphertext) != length + TAG_SIZE:
            raise ChunkDecryptionFailed(
                f"chunk {chunk_index} has {len(ciphertext)} bytes, expected {length + TAG_SIZE}"
            )
        try:
            self._aead.decrypt_into(
                chunk_nonce(chunk_index),
                ciphertext,
                chunk_aad(chunk_index, self.chunk_size, self.plaintext_size),
                out[:length],
            )
        except InvalidTag:
            raise ChunkDecryptionFailed(
                f"chunk {chunk_index} does not open with this content key"
            ) from None
        return length

    def decrypt(self, chunk_index: int, ciphertext: bytes | bytearray | memoryview) -> bytes:
        """Plaintext of chunk ``chunk_index``; ``ChunkDecryptionFailed`` unless authentic."""
        expected = self.plaintext_length(chunk_index) + TAG_SIZE
        if len(ciphertext) != expected:
            raise ChunkDecryptionFailed(
                f"chunk {chunk_index} has {len(ciphertext)} bytes, expected {expected}"
            )
        try:
            return self._aead.decrypt(
                chunk_nonce(chunk_index),
                ciphertext,
                chunk_aad(chunk_index, self.chunk_size, self.plaintext_size),
            )
        except InvalidTag:
            raise ChunkDecryptionFailed(
                f"chunk {chunk_index} does not open with this content key"
            ) from None


def _seal_info(device_id: bytes, content_id: bytes) -> bytes:
    return _SEAL_INFO_LABEL + device_id + content_id


def seal_content_key(content_key: bytes, device_public_raw: bytes, content_id: bytes) -> bytes:
    """``content_key`` sealed to the device whose X25519 public key is given (HPKE).

    Only the holder of the matching private key, named by ``device_id_of`` of that
    public key, can open it, and only for ``content_id``.
    """
    if len(content_key) != CONTENT_KEY_SIZE:
        raise ValueError(f"a content key has {CONTENT_KEY_SIZE} bytes, not {len(content_key)}")
    info = _seal_info(device_id_of(device_public_raw), content_id)
    return _SUITE.encrypt(content_key, public_key_from_raw(device_public_raw), info=info)


def open_content_key(sealed: bytes, device_key: DeviceKey, content_id: bytes) -> bytes:
    """The content key sealed to this device for ``content_id``.

    Raises ``ContentKeyUnsealFailed`` when it was sealed to another device, for another
    content, or altered.
    """
    if len(sealed) != SEALED_KEY_SIZE:
        raise ContentKeyUnsealFailed(
            f"a sealed content key has {SEALED_KEY_SIZE} bytes, not {len(sealed)}"
        )
    info = _seal_info(device_key.device_id, content_id)
    try:
        content_key = _SUITE.decrypt(sealed, device_key.private_key, info=info)
    except (InvalidTag, ValueError):
        raise ContentKeyUnsealFailed(
            "the content key is not sealed to this device for this content"
        ) from None
    return content_key


def wrap_content_key(wrapping_key: bytes, content_key: bytes, content_id: bytes) -> bytes:
    """``content_key`` encrypted at rest under ``wrapping_key``, bound to ``content_id``."""
    nonce = os.urandom(WRAP_NONCE_SIZE)
    return nonce + AESGCM(wrapping_key).encrypt(nonce, content_key, _WRAP_AAD_LABEL + content_id)


def unwrap_content_key(wrapping_key: bytes, wrapped: bytes, content_id: bytes) -> bytes:
    """The content key ``wrap_content_key`` wrapped for ``content_id``."""
    if len(wrapped) != WRAPPED_KEY_SIZE:
        raise ConfidentialError(f"a wrapped content key has {WRAPPED_KEY_SIZE} bytes")
    nonce, body = wrapped[:WRAP_NONCE_SIZE], wrapped[WRAP_NONCE_SIZE:]
    try:
        return AESGCM(wrapping_key).decrypt(nonce, body, _WRAP_AAD_LABEL + content_id)
    except InvalidTag:
        raise ConfidentialError(
            "the stored content key does not open with this console's key-wrapping key "
            "(content-keys.key was replaced?)"
        ) from None
