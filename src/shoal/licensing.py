"""Licence keys: signed tokens (customer, seats, expiry) and what they allow at a time.

Theory of operation
-------------------
A licence key is one line of text::

    SHOAL1.<base64url(payload)>.<base64url(signature)>

The payload is canonical JSON (sorted keys, no spaces) with ``customer``, ``seats``,
``expires`` (an ISO date: the licence is valid through that whole day, UTC),
``issued``, ``licence_id`` and ``vendor_key_id`` (hex of the signer's key ID). The
signature is Ed25519 by the vendor key over the payload bytes. The console trusts
exactly one vendor public key, the one it is configured with (``shoal console
--vendor-public-key``): no key ships in the package, since anyone holding a shipped
private key could issue licences for any number of seats. Self-hosting, the demo, the
lab and the tests make their own vendor key (``shoal keygen``) and issue with it.

Seats used = client installs (devices registered). Using more seats than bought is
allowed, but ``LicenceStatus`` carries ``seats_over`` and a message that says so, and
every place that shows a licence shows that message. ``evaluate`` takes ``now``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from cryptography.exceptions import InvalidSignature

from shoal.core.errors import ShoalError
from shoal.core.signing import SigningKey, VerifyKey

TOKEN_PREFIX = "SHOAL1"
MAX_SEATS = 10_000_000
SIGNATURE_SIZE = 64


class LicenceError(ShoalError, ValueError):
    """A licence key that cannot be used. Subclasses name the cause."""


class LicenceMalformed(LicenceError):
    """The text is not a shoal licence key (truncated, mistyped, wrong format)."""


class LicenceSignatureInvalid(LicenceError):
    """The key was changed after signing, or signed by a vendor key not trusted here."""


@dataclass(frozen=True, slots=True)
class Licence:
    """The fields of a verified licence key."""

    customer: str
    seats: int
    expires: date
    issued: date
    licence_id: str
    vendor_key_id: str

    def payload(self) -> bytes:
        return json.dumps(
            {
                "customer": self.customer,
                "seats": self.seats,
                "expires": self.expires.isoformat(),
                "issued": self.issued.isoformat(),
                "licence_id": self.licence_id,
                "vendor_key_id": self.vendor_key_id,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_licence(
    vendor_key: SigningKey, customer: str, seats: int, expires: date, issued: date
) -> str:
    """Sign a licence and return its key text."""
    if not 1 <= seats <= MAX_SEATS:
        raise LicenceMalformed(f"seats must be between 1 and {MAX_SEATS}, got {seats}")
    if expires < issued:
        raise LicenceMalformed(f"expiry {expires} is before the issue date {issued}")
    licence = Licence(
        customer=customer,
        seats=seats,
        expires=expires,
        issued=issued,
        licence_id=secrets.token_hex(8),
        vendor_key_id=vendor_key.verify_key.key_id.hex(),
    )
    payload = licence.payload()
    signature = vendor_key.private_key.sign(payload)
    return f"{TOKEN_PREFIX}.{_b64encode(payload)}.{_b64encode(signature)}"


def read_licence(key_text: str, vendor: VerifyKey) -> Licence:
    """Check a licence key's signature against the vendor key and return its fields."""
    parts = key_text.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise LicenceMalformed(
            f"not a shoal licence key: expected {TOKEN_PREFIX}.<payload>.<signature> "
            "(was it copied whole?)"
        )
    try:
        payload = _b64decode(parts[1])
        signature = _b64decode(parts[2])
    except (binascii.Error, ValueError):
        raise LicenceMalformed("licence key is not valid base64 (was it copied whole?)") from None
    if len(signature) != SIGNATURE_SIZE:
        raise LicenceMalformed(
            f"licence key signature is {len(signature)} bytes, not {SIGNATURE_SIZE} "
            "(was it copied whole?)"
        )
    try:
        fields = json.loads(payload)
        licence = Licence(
            customer=str(fields["customer"]),
            seats=int(fields["seats"]),
            expires=date.fromisoformat(fields["expires"]),
            issued=date.fromisoformat(fields["issued"]),
            licence_id=str(fields["licence_id"]),
            vendor_key_id=str(fields["vendor_key_id"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise LicenceMalformed(f"licence key payload is unreadable ({error})") from None
    if licence.vendor_key_id != vendor.key_id.hex():
        raise LicenceSignatureInvalid(
            f"licence key was signed by vendor key {licence.vendor_key_id}, but this console "
            f"trusts vendor key {vendor.key_id.hex()}"
        )
    try:
        vendor.public_key.verify(signature, payload)
    except InvalidSignature:
        raise LicenceSignatureInvalid(
            "licence key signature does not match its content (changed after issue)"
        ) from None
    if licence.seats < 1:
        raise LicenceMalformed(f"licence has {licence.seats} seats")
    return licence


class LicenceState(StrEnum):
    NONE = "none"
    VALID = "valid"
    OVERAGE = "overage"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class LicenceStatus:
    """A licence as shown anywhere: what it allows now, and a message that explains it."""

    state: LicenceState
    seats: int
    seats_used: int
    seats_over: int
    customer: str | None
    expires: date | None
    days_left: int | None
    message: str

    @property
    def active(self) -> bool:
        """Whether the licence activates servers and new client installs."""
        return self.state in (LicenceState.VALID, LicenceState.OVERAGE)

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "active": self.active,
            "customer": self.customer,
            "seats": self.seats,
            "seats_used": self.seats_used,
            "seats_over": self.seats_over,
            "overage": self.seats_over > 0,
            "expires": self.expires.isoformat() if self.expires else None,
            "days_left": self.days_left,
            "message": self.message,
        }


def evaluate(licence: Licence | None, seats_used: int, now: datetime) -> LicenceStatus:
    """What ``licence`` allows at ``now`` with ``seats_used`` client installs."""
    if licence is None:
        return LicenceStatus(
            LicenceState.NONE,
            0,
            seats_used,
            seats_used,
            None,
            None,
            None,
            "no licence key saved: P2P servers are not activated and no client can "
            "register; save a key with PUT /api/v1/license",
        )
    today = now.date()
    days_left = (licence.expires - today).days
    seats_over = max(0, seats_used - licence.seats)
    over_text = (
        f"; {seats_over} seat{'s' if seats_over != 1 else ''} over the licence "
        f"({seats_used} used of {licence.seats}): overage is allowed, but buy "
        f"{seats_over} more seat{'s' if seats_over != 1 else ''}"
        if seats_over
        else ""
    )
    if days_left < 0:
        return LicenceStatus(
            LicenceState.EXPIRED,
            licence.seats,
            seats_used,
            seats_over,
            licence.customer,
            licence.expires,
            days_left,
            f"licence for {licence.customer} expired on {licence.expires.isoformat()} "
            f"({-days_left} day{'s' if days_left != -1 else ''} ago): devices and P2P servers "
            "already activated keep their content, but no new P2P server is activated and "
            "no new client can register until a renewed key is saved" + over_text,
        )
    state = LicenceState.OVERAGE if seats_over else LicenceState.VALID
    return LicenceStatus(
        state,
        licence.seats,
        seats_used,
        seats_over,
        licence.customer,
        licence.expires,
        days_left,
        f"licence for {licence.customer}: {seats_used} of {licence.seats} seats used, "
        f"valid until {licence.expires.isoformat()} ({days_left} days left)" + over_text,
    )
