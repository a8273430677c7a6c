"""A device's own key pair, and the device ID bound to it.

Every device creates one X25519 key pair at first start and keeps it in its data
directory. The device ID is derived from the public key, so a device ID names exactly
one key: a device can speak only for itself. The same key serves two purposes:

- the control channel: static X25519 with the P2P server's console-certified key,
  through HKDF, gives the key that authenticates every control datagram both ways;
- confidential content: the console seals each content key to the device's public key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shoal.core.errors import KeyFileError
from shoal.core.files import write_private

DEVICE_ID_SIZE = 16
PUBLIC_KEY_SIZE = 32
_DEVICE_ID_LABEL = b"shoal device id v1"


def device_id_of(public_raw: bytes) -> bytes:
    """The 16-byte device ID that names the holder of this X25519 public key."""
    if len(public_raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an X25519 public key has {PUBLIC_KEY_SIZE} bytes, not {len(public_raw)}")
    return hashlib.sha256(_DEVICE_ID_LABEL + public_raw).digest()[:DEVICE_ID_SIZE]


def public_key_from_raw(public_raw: bytes) -> X25519PublicKey:
    """An X25519 public key from its 32 raw bytes (``ValueError`` if it is not one)."""
    if len(public_raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an X25519 public key has {PUBLIC_KEY_SIZE} bytes, not {len(public_raw)}")
    return X25519PublicKey.from_public_bytes(public_raw)


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """A device's (or a P2P server's) X25519 private key."""

    private_key: X25519PrivateKey

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, private_raw: bytes) -> DeviceKey:
        return cls(X25519PrivateKey.from_private_bytes(private_raw))

    @classmethod
    def load_or_create(cls, path: Path) -> DeviceKey:
        """The key kept at ``path`` (32 raw bytes, mode 0600); created there at first start.

        A new key is written to a temporary file, fsynced and renamed, so a crash leaves
        either no key or the whole key, never half of one.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            key = cls.generate()
            key._save(path)
            return key
        except OSError as error:
            raise KeyFileError(f"{path}: cannot read the device key ({error.strerror})") from None
        if len(raw) != 32:
            raise KeyFileError(
                f"{path}: a device key has 32 bytes, this file has {len(raw)} "
                "(remove it to give this device a new identity and a new licence seat)"
            )
        return cls.from_raw(raw)

    def _save(self, path: Path) -> None:
        # The *_raw methods, not private_bytes(serialization...): the serialization
        # package imports every key type and ~1 MB with them (docs/network.md, idle RSS).
        write_private(path, self.private_key.private_bytes_raw())

    @property
    def public_raw(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    @property
    def device_id(self) -> bytes:
        return device_id_of(self.public_raw)

    def exchange(self, peer_public_raw: bytes) -> bytes:
        """The X25519 shared secret with the holder of ``peer_public_raw``."""
        return self.private_key.exchange(public_key_from_raw(peer_public_raw))


CONTROL_KEY_SIZE = 32
_CONTROL_KEY_INFO = b"shoal control channel v2"


def control_key(
    shared_secret: bytes, enrollment_token: bytes, device_public: bytes, server_public: bytes
) -> bytes:
    """The HMAC key of every control datagram between one device and one server.

    ``shared_secret`` is X25519(device key, certified server key) (RFC 7748 §6.1); it is
    expanded by HKDF-SHA256 (RFC 5869) with the enrollment token as salt, so that a tag
    proves both the device's private key and the token, and with both public keys in
    ``info``, so that the key is bound to exactly this pair.
    """
    if shared_secret == bytes(len(shared_secret)):
        # RFC 7748 §6.1: an all-zero output means a small-order public key; refuse it.
        raise ValueError("X25519 gave an all-zero shared secret (small-order public key)")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=CONTROL_KEY_SIZE,
        salt=enrollment_token,
        info=_CONTROL_KEY_INFO + device_public + server_public,
    ).derive(shared_secret)


def enrollment_token_for(auth_key: str) -> bytes:
    """The enrollment token of a P2P server's devices (16 bytes), derived from the
    server's console authentication key: a device never holds the key that talks to
    the console, and the console can put the token in enrollment bundles."""
    return hmac.new(auth_key.encode(), b"shoal client key v1", hashlib.sha256).digest()[:16]
