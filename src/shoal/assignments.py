"""The console's signed assignment document: signed by the console, read by clients.

The console signs one canonical JSON document listing every assignment; the P2P server
relays it unchanged as a blob, so a client trusts an assignment only if the console's
Ed25519 signature over the document verifies. A client applies the assignments whose
target is itself (``device``), an office whose subtree holds its office (``office``
with ``offices`` listed), or ``everyone``.

Freshness: the document carries ``sequence`` (a positive integer the console
increases every time it signs) and ``expires`` (ISO-8601 UTC). A client keeps the
highest sequence it accepted and refuses an older document (a replay) or an expired
one (``shoal.client.trust``). The envelope also carries the console's key rotation
statements (``shoal.key_rotation``), oldest first.

The envelope (canonical JSON)::

    {"document": TEXT, "signature": HEX, "key_id": HEX, "rotations": [STATEMENT, ...]}

and the document::

    {"format": "shoal-assignments-2", "sequence": 17, "generated_at": ISO,
     "expires": ISO, "console_keys": [HEX, ...], "assignments": [{"id", "content_id",
     "target_kind", "target", "offices", "background", "install"?, "manifest"?:
     {"sha256": HEX, "length": INT}}, ...]}

``install`` (optional) is the version's install specification
(``shoal.install_spec``): covered by the signature like everything else, so a client
runs only commands the console signed.

``console_keys`` (optional) lists every key the console has signed with, oldest first:
signed by the current key, it tells a client enrolled after a rotation which earlier
keys signed the manifests P2P servers still relay.

``manifest`` (optional) is the SHA-256 (hex) and length of the content's signed manifest
file, as P2P servers relay it: a client fetches that blob at once, in one round trip,
instead of asking the server where the manifest is first (``MANIFEST_INFO``). The
transfer engine checks the bytes against the signed SHA-256, so a server or peer cannot
substitute another manifest. Older clients ignore the field; a document without it (an
older console) costs the client the extra round trip, nothing else.

A confidential entry carries ``confidential``: the plaintext's size and SHA-256 and
``sealed_keys``, device ID -> the content key sealed to that device
(``shoal.core.sealing``); a device reads only its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature

from shoal.core.errors import ShoalError
from shoal.core.ids import ContentId
from shoal.core.signing import SigningKey, VerifyKey
from shoal.install_spec import InstallSpec, InstallSpecInvalid, read_install_spec
from shoal.key_rotation import RotationInvalid, RotationStatement, read_rotation

DOCUMENT_FORMAT = "shoal-assignments-2"
MAX_SEQUENCE = 2**63 - 1
MAX_MANIFEST_LENGTH = 2**32 - 1
"""A manifest file's length fits the control plane's ``uint32`` (``ManifestReply``)."""


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
class ManifestRef:
    """Which blob is the content's signed manifest file: its SHA-256 and length."""

    sha256: bytes
    length: int

    def entry(self) -> dict[str, Any]:
        """The entry's ``manifest`` field."""
        return {"sha256": self.sha256.hex(), "length": self.length}


@dataclass(frozen=True, slots=True)
class Assignment:
    assignment_id: int
    content_id: ContentId
    background: bool
    confidential: SealedContent | None = None
    install: InstallSpec | None = None
    """What to run once the content is held (signed with the document), or nothing."""
    manifest: ManifestRef | None = None
    """The signed manifest's blob, when the console said (fetched in one round trip)."""


@dataclass(frozen=True, slots=True)
class SignedEnvelope:
    """What a P2P server relays: the document text, its signature, rotation statements."""

    document_text: str
    signature: bytes
    key_id: str
    rotations: tuple[RotationStatement, ...]


@dataclass(frozen=True, slots=True)
class AssignmentDocument:
    """A document whose signature verified: its freshness fields and raw entries."""

    sequence: int
    expires: datetime
    entries: tuple[dict[str, Any], ...]
    console_keys: tuple[bytes, ...]
    """Every key the console has signed with (raw Ed25519), as this document says."""
    digest: str
    """SHA-256 (hex) of the document text: the same sequence must name the same text."""


def canonical_json(document: Any) -> str:
    """The one text form of a JSON document that is signed."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def sign_assignments(
    key: SigningKey, document: Any, rotations: Iterable[dict[str, str]] = ()
) -> dict[str, Any]:
    """The signed envelope: canonical document text, signature, signer key ID (hex), and
    the console's key rotation statements (oldest first)."""
    text = canonical_json(document)
    return {
        "document": text,
        "signature": key.private_key.sign(text.encode()).hex(),
        "key_id": key.verify_key.key_id.hex(),
        "rotations": list(rotations),
    }


def encode_envelope(envelope: dict[str, Any]) -> bytes:
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


def read_envelope(blob: bytes) -> SignedEnvelope:
    """Parse the envelope (nothing is verified yet)."""
    try:
        envelope = json.loads(blob)
        document_text = envelope["document"]
        signature = bytes.fromhex(envelope["signature"])
        key_id = str(envelope.get("key_id", ""))
        rotations = tuple(read_rotation(entry) for entry in envelope.get("rotations") or ())
        if not isinstance(document_text, str):
            raise TypeError("document is not a string")
    except (ValueError, KeyError, TypeError, AttributeError, RotationInvalid) as error:
        raise AssignmentsInvalid(f"assignment document is malformed ({error})") from None
    return SignedEnvelope(document_text, signature, key_id, rotations)


def verify_document(envelope: SignedEnvelope, console_key: VerifyKey) -> AssignmentDocument:
    """Check the console's signature, the format and the freshness fields."""
    try:
        console_key.public_key.verify(envelope.signature, envelope.document_text.encode())
    except InvalidSignature:
        raise AssignmentsInvalid(
            f"assignment document is not signed by the console's current key "
            f"{console_key.key_id.hex()} (signer {envelope.key_id or 'unknown'}): refused"
        ) from None
    try:
        document = json.loads(envelope.document_text)
        if document["format"] != DOCUMENT_FORMAT:
            raise ValueError(f"format {document['format']!r} is not {DOCUMENT_FORMAT}")
        sequence = document["sequence"]
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise TypeError("sequence is not an integer")
        if not 0 < sequence <= MAX_SEQUENCE:
            raise ValueError(f"sequence {sequence} out of range")
        expires = datetime.fromisoformat(document["expires"])
        if expires.tzinfo is None:
            raise ValueError("expires has no time zone")
        entries = tuple(document["assignments"])
        if not all(isinstance(entry, dict) for entry in entries):
            raise TypeError("an assignment is not an object")
        console_keys = tuple(bytes.fromhex(key) for key in document.get("console_keys") or ())
        if any(len(key) != 32 for key in console_keys):
            raise ValueError("a console key is not 32 bytes")
    except (ValueError, KeyError, TypeError) as error:
        raise AssignmentsInvalid(f"assignment document is malformed ({error})") from None
    return AssignmentDocument(
        sequence=sequence,
        expires=expires.astimezone(UTC),
        entries=entries,
        console_keys=console_keys,
        digest=hashlib.sha256(envelope.document_text.encode()).hexdigest(),
    )


def assignments_for(
    document: AssignmentDocument, device_id: str, office: str | None
) -> list[Assignment]:
    """The assignments of ``document`` that target this device."""
    try:
        mine = []
        for entry in document.entries:
            if entry_applies(entry, device_id, office):
                mine.append(
                    Assignment(
                        int(entry["id"]),
                        ContentId.from_hex(entry["content_id"]),
                        bool(entry["background"]),
                        _sealed_content(entry.get("confidential"), device_id),
                        None
                        if entry.get("install") is None
                        else read_install_spec(entry["install"]),
                        _manifest_ref(entry.get("manifest")),
                    )
                )
    except (ValueError, KeyError, TypeError, AttributeError, InstallSpecInvalid) as error:
        raise AssignmentsInvalid(f"assignment document is malformed ({error})") from None
    return mine


def manifest_ref(manifest_file: bytes) -> ManifestRef:
    """The ``manifest`` field of an entry whose signed manifest file is ``manifest_file``."""
    return ManifestRef(hashlib.sha256(manifest_file).digest(), len(manifest_file))


def _manifest_ref(field: Any) -> ManifestRef | None:
    """The ``manifest`` field of an entry (optional)."""
    if field is None:
        return None
    digest = bytes.fromhex(field["sha256"])
    length = field["length"]
    if not isinstance(length, int) or isinstance(length, bool):
        raise TypeError("manifest length is not an integer")
    if len(digest) != 32 or not 0 < length <= MAX_MANIFEST_LENGTH:
        raise ValueError("manifest SHA-256 or length out of range")
    return ManifestRef(digest, length)


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
