"""The console's signed assignment document: signed by the console, read by clients.

The console signs one canonical JSON document listing every assignment; the P2P server
relays it unchanged as a blob, so a client trusts an assignment only if the console's
Ed25519 signature over the document verifies. A client applies the assignments whose
target is itself (``device``), an office whose subtree holds its office (``office``
with ``offices`` listed), or ``everyone``.

A confidential entry carries ``confidential``: the plaintext's size and SHA-256 and
``sealed_keys``, device ID -> the content key sealed to that device
(``shoal.core.sealing``); a device reads only its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature

from shoal.core.errors import ShoalError
from shoal.core.ids import ContentId
from shoal.core.signing import SigningKey, VerifyKey


class AssignmentsInvalid(ShoalError):
    """The assignment document is malformed or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class SealedContent:
    """What a device needs to open a confidential content (``shoal.core.sealing``)."""

    plaintext_size: int
    plaintext_sha256: bytes
    sealed_key: bytes | None
    """The content key sealed to this device; None until the console knows its key."""


@dataclass(frozen=True, slots=True)
class Assignment:
    assignment_id: int
    content_id: ContentId
    background: bool
    confidential: SealedContent | None = None


def canonical_json(document: Any) -> str:
    """The one text form of a JSON document that is signed."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def sign_assignments(key: SigningKey, document: Any) -> dict[str, str]:
    """The signed envelope: canonical document text, signature and signer key ID (hex)."""
    text = canonical_json(document)
    return {
        "document": text,
        "signature": key.private_key.sign(text.encode()).hex(),
        "key_id": key.verify_key.key_id.hex(),
    }


def encode_envelope(envelope: dict[str, str]) -> bytes:
    """The bytes a P2P server relays to its clients (and they parse)."""
    return canonical_json(envelope).encode()


def entry_applies(entry: Any, device_id: str, office: str | None) -> bool:
    """Does this assignment entry target the device ``device_id`` (hex) in ``office``?"""
    kind = entry["target_kind"]
    return bool(
        kind == "everyone"
        or (kind == "device" and entry["target"] == device_id)
        or (kind == "office" and office is not None and office in (entry["offices"] or []))
    )


def assigned_entries(signed_envelope: bytes) -> dict[ContentId, list[Any]]:
    """Every assignment entry of a signed envelope, by content ID, without checking the
    signature: for the P2P server, which got the envelope from the console over its
    authenticated link and only reads whom each content is for. Malformed: {}."""
    found: dict[ContentId, list[Any]] = {}
    try:
        envelope = json.loads(signed_envelope)
        for entry in json.loads(envelope["document"])["assignments"]:
            entry_applies(entry, "", None)  # its target fields are readable
            found.setdefault(ContentId.from_hex(entry["content_id"]), []).append(entry)
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    return found


def parse_signed_assignments(
    blob: bytes, console_key: VerifyKey, device_id: str, office: str | None
) -> list[Assignment]:
    """Verify the console's signature and return the assignments for this device."""
    try:
        envelope = json.loads(blob)
        document_text = envelope["document"]
        signature = bytes.fromhex(envelope["signature"])
    except (ValueError, KeyError, TypeError) as error:
        raise AssignmentsInvalid(f"assignment document is malformed ({error})") from None
    try:
        console_key.public_key.verify(signature, document_text.encode())
    except InvalidSignature:
        raise AssignmentsInvalid(
            "assignment document is not signed by the console's key: refused"
        ) from None
    try:
        entries = json.loads(document_text)["assignments"]
        mine = []
        for entry in entries:
            if entry_applies(entry, device_id, office):
                mine.append(
                    Assignment(
                        int(entry["id"]),
                        ContentId.from_hex(entry["content_id"]),
                        bool(entry["background"]),
                        _sealed_content(entry.get("confidential"), device_id),
                    )
                )
    except (ValueError, KeyError, TypeError) as error:
        raise AssignmentsInvalid(f"assignment document is malformed ({error})") from None
    return mine


def _sealed_content(field: Any, device_id: str) -> SealedContent | None:
    """The ``confidential`` field of an entry, as this device sees it."""
    if field is None:
        return None
    sealed_hex = field["sealed_keys"].get(device_id)
    digest = bytes.fromhex(field["plaintext_sha256"])
    size = int(field["plaintext_size"])
    if len(digest) != 32 or size < 0:
        raise ValueError("confidential plaintext size or SHA-256 out of range")
    return SealedContent(size, digest, bytes.fromhex(sealed_hex) if sealed_hex else None)
