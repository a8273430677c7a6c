"""A P2P server's certificate: its X25519 key, vouched for by the console's Ed25519 key.

Each P2P server has its own X25519 key pair in its data directory. When the server
registers with the console it sends the public key; the console answers with this
certificate, signed by its Ed25519 key. Clients fetch the certificate over UDP
(``HELLO`` -> ``CERTIFICATE``), check it against the console key pinned at enrollment,
and from then on accept only control datagrams authenticated with the key derived
from the certified server key (``shoal.core.identity.control_key``). A server
restarted with a new key gets a new certificate at its next registration.

Byte layout (all integers big-endian)::

    format u8 (1), server_public_key 32 B, address 4 B (IPv4), not_after u64 (Unix
    seconds), server_id_length u8, server_id (UTF-8), name_length u8, name (UTF-8),
    signature 64 B   (server ID and name: at most 64 bytes each)

The signature is Ed25519 (RFC 8032) over ``DOMAIN`` followed by every byte before it,
so a certificate's signature can never be mistaken for a manifest's.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature

from shoal.core.errors import ShoalError
from shoal.core.signing import SigningKey, VerifyKey

DOMAIN = b"shoal server certificate v1\x00"
FORMAT = 1
SIGNATURE_SIZE = 64
MAX_NAME = 64
_FIXED = struct.Struct(">B32s4sQ")
MAX_CERTIFICATE_SIZE = _FIXED.size + 2 * (1 + MAX_NAME) + SIGNATURE_SIZE
VALIDITY_SECONDS = 30 * 86400


class CertificateInvalid(ShoalError):
    """The server certificate is malformed, expired, or not signed by a trusted key."""


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    public_key: bytes
    server_id: str
    """The server's ID as the console knows it."""
    address: str
    not_after: int
    name: str

    def body(self) -> bytes:
        server_id = self.server_id.encode("utf-8")
        name = self.name.encode("utf-8")[:MAX_NAME].decode("utf-8", "ignore").encode("utf-8")
        if len(server_id) > MAX_NAME:
            raise ValueError(f"a server ID has at most {MAX_NAME} bytes")
        fixed = _FIXED.pack(
            FORMAT, self.public_key, ipaddress.IPv4Address(self.address).packed, self.not_after
        )
        return fixed + bytes([len(server_id)]) + server_id + bytes([len(name)]) + name

    def sign(self, console_key: SigningKey) -> bytes:
        """The certificate's bytes, signed by the console."""
        body = self.body()
        return body + console_key.private_key.sign(DOMAIN + body)


def issue_certificate(
    console_key: SigningKey,
    public_key: bytes,
    server_id: str,
    address: str,
    name: str,
    now: float,
    validity: float = VALIDITY_SECONDS,
) -> bytes:
    """What the console hands a server at registration (``ValueError`` on bad fields)."""
    if len(public_key) != 32:
        raise ValueError("a server key is an X25519 public key of 32 bytes")
    certificate = ServerCertificate(public_key, server_id, address, int(now + validity), name)
    return certificate.sign(console_key)


def read_certificate(data: bytes) -> ServerCertificate:
    """Decode without checking the signature (``CertificateInvalid`` on bad bytes)."""
    if len(data) < _FIXED.size + 2 + SIGNATURE_SIZE:
        raise CertificateInvalid(f"a server certificate of {len(data)} bytes is truncated")
    version, public_key, address, not_after = _FIXED.unpack_from(data)
    if version != FORMAT:
        raise CertificateInvalid(f"server certificate format {version} is not {FORMAT}")
    offset = _FIXED.size
    texts = []
    for _ in range(2):  # server ID, name
        length = data[offset] if offset < len(data) else 0
        text = data[offset + 1 : offset + 1 + length]
        if len(text) != length or length > MAX_NAME:
            raise CertificateInvalid("server certificate is truncated")
        try:
            texts.append(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise CertificateInvalid("server certificate text is not UTF-8") from None
        offset += 1 + length
    if len(data) != offset + SIGNATURE_SIZE:
        raise CertificateInvalid("server certificate length does not match its fields")
    server_id, name = texts
    return ServerCertificate(
        public_key, server_id, str(ipaddress.IPv4Address(address)), not_after, name
    )


def verify_certificate(
    data: bytes, trusted: Iterable[VerifyKey], now: float, address: str | None = None
) -> ServerCertificate:
    """Decode and check a certificate: signed by a trusted console key, not expired,
    and (when ``address`` is given) for the server at that address."""
    certificate = read_certificate(data)
    body, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    for key in trusted:
        try:
            key.public_key.verify(signature, DOMAIN + body)
            break
        except InvalidSignature:
            continue
    else:
        raise CertificateInvalid("the server certificate is not signed by the pinned console key")
    if now > certificate.not_after:
        raise CertificateInvalid(
            f"the server certificate expired at {certificate.not_after} (Unix time)"
        )
    if address is not None and _is_ipv4(address) and address != certificate.address:
        raise CertificateInvalid(
            f"the server certificate is for {certificate.address}, not {address}"
        )
    return certificate


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
