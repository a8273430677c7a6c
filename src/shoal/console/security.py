"""Secrets of the console: password hashes, tokens, its TLS certificate, the server key.

- Passwords are hashed with argon2id (argon2-cffi, OWASP's first choice).
- Session cookies, API tokens and the P2P server authentication key are random
  256-bit values; the database keeps only their SHA-256, so a stolen database does not
  hand out logins. Comparisons are constant-time.
- Without a given certificate, the console makes a self-signed one at first start
  (ECDSA P-256, valid ten years, for localhost, 127.0.0.1, ::1 and the host's name).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
from datetime import datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoal.core.files import write_private

_hasher = PasswordHasher()
TOKEN_PREFIX_API = "shoal_"


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; parameters stored in the hash)."""
    return _hasher.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; never raises on a mismatch.

    With no hash (an unknown user name) the password is checked against a dummy hash
    made with the same parameters, and the answer is False: an unknown user name costs
    the same time as a wrong password, so timing does not tell which names exist.
    """
    try:
        if password_hash is None:
            _hasher.verify(_dummy_hash(), password)
            return False
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(32))


def new_token(prefix: str = "") -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database stores for a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


#: Keys, certificate and secrets of the console: owner-only, durable (``shoal.core.files``).
write_secret_file = write_private


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())


def load_or_create_server_key(path: Path) -> str:
    """The shared key P2P servers present; made at first start."""
    if path.exists():
        return path.read_text().strip()
    key = new_token()
    write_secret_file(path, (key + "\n").encode())
    return key


def create_self_signed_certificate(
    cert_path: Path, key_path: Path, now: datetime, extra_names: tuple[str, ...] = ()
) -> None:
    """Write a self-signed certificate and its private key (PEM)."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for name in (hostname, *extra_names):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if name and name != "localhost":
                names.append(x509.DNSName(name))
    for address in ("127.0.0.1", "::1"):
        if address not in extra_names:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"shoal console {hostname}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    write_secret_file(
        key_path,
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_secret_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)


def certificate_fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint of a PEM certificate, as colon-separated hex."""
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()
