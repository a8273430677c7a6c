"""What a client trusts, kept on its disk: the pinned console key, the newest document seen.

The console's public key is pinned at enrollment (from the enrollment bundle) and only a
statement signed by a pinned key can replace it (key rotation); nothing a P2P server or
a peer sends on the LAN changes it. ``highest_sequence`` is the sequence number of the
newest signed assignment document accepted, so an older one (a replay) is refused even
after a restart.

``accept_assignments`` is the whole decision on a signed assignment document (pure:
the wall-clock time is passed in):

1. follow the key rotation statements in the envelope, oldest first: a statement
   signed by the key trusted *now* (the last of ``console_keys``) adds its new key;
   one already followed is skipped; any other is ignored and counted (forged, or a
   fork signed by a retired key);
2. the document must be signed by the resulting current key: a document signed by a
   retired key is refused, whatever its sequence;
3. it must not be expired at ``now``, and its sequence must not be lower than
   ``highest_sequence`` (equal is fine only for the very same document text).

Only if all hold is the new state (keys and sequence) returned; on refusal the caller
keeps the state it had, and with it the assignments, pins and downloads.

Manifests: a manifest signed by any key of the chain, or by a key the accepted
document (signed by the current key) lists in ``console_keys``, is accepted
(``manifest_keys``). The signature adds nothing once the current key's document names
the content ID (the content ID is the SHA-256 of the manifest body), so manifests signed
before a rotation, still cached by P2P servers, stay usable (also by a device enrolled
after the rotation) without re-signing every copy on the LAN.

The state is one small JSON file, replaced atomically (write, fsync, rename, fsync the
directory): a crash leaves the old state or the new one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from shoal.assignments import (
    AssignmentDocument,
    AssignmentsInvalid,
    SignedEnvelope,
    verify_document,
)
from shoal.core.errors import ShoalError
from shoal.core.files import write_private
from shoal.core.signing import VerifyKey
from shoal.key_rotation import RotationStatement

TRUST_FILE = "trust.json"
_FORMAT = "shoal-trust-1"


class TrustStateError(ShoalError):
    """The trust file is missing, unreadable or malformed: the device must be enrolled."""


class DocumentRefused(ShoalError):
    """A signed document is refused (bad signature, a retired key, older, expired)."""

    def __init__(self, message: str, rotations_ignored: int = 0) -> None:
        super().__init__(message)
        self.rotations_ignored = rotations_ignored


class DocumentStale(DocumentRefused):
    """Older than the newest accepted (a replay), or another text with the same sequence."""


class DocumentExpired(DocumentRefused):
    """Its ``expires`` time has passed."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A document accepted: the trust state to keep from now on, and the document."""

    trust: TrustState
    document: AssignmentDocument
    rotations_adopted: int
    rotations_ignored: int


@dataclass(frozen=True, slots=True)
class TrustState:
    """The pinned console keys (newest last) and the newest accepted document's sequence."""

    console_keys: tuple[bytes, ...]
    highest_sequence: int = 0
    document_sha256: str = ""
    """SHA-256 (hex) of the document accepted with ``highest_sequence``."""

    @property
    def console_key(self) -> VerifyKey:
        """The console key that signs what this client accepts now."""
        return VerifyKey.from_raw(self.console_keys[-1])

    def manifest_keys(self, document: AssignmentDocument | None = None) -> list[VerifyKey]:
        """Keys whose manifest signatures are accepted: every key of the verified chain,
        and the console's earlier keys listed by the accepted ``document``."""
        listed = document.console_keys if document is not None else ()
        return [VerifyKey.from_raw(key) for key in dict.fromkeys(self.console_keys + listed)]

    def with_sequence(self, sequence: int) -> TrustState:
        return replace(self, highest_sequence=max(self.highest_sequence, sequence))

    def follow_rotations(
        self, statements: tuple[RotationStatement, ...]
    ) -> tuple[TrustState, int, int]:
        """The state after the statements signed by the current key: (state, adopted,
        ignored). Statements already followed are neither adopted nor ignored."""
        keys = list(self.console_keys)
        adopted = ignored = 0
        for statement in statements:
            if statement.new_key in keys and statement.old_key in keys:
                continue  # followed before (the chain is re-sent with every document)
            if statement.signed_by(keys[-1]):
                keys.append(statement.new_key)
                adopted += 1
            else:
                ignored += 1
        return replace(self, console_keys=tuple(keys)), adopted, ignored

    def accept_assignments(self, envelope: SignedEnvelope, now: datetime) -> Accepted:
        """Decide on a signed assignment document (see the module docstring).

        Raises ``DocumentRefused`` (``DocumentStale``, ``DocumentExpired``) with a
        message for ``shoal client status``; ``self`` is never changed.
        """
        candidate, adopted, ignored = self.follow_rotations(envelope.rotations)
        try:
            document = verify_document(envelope, candidate.console_key)
        except AssignmentsInvalid as error:
            raise DocumentRefused(str(error), ignored) from None
        if document.expires <= now:
            raise DocumentExpired(
                f"assignment document {document.sequence} expired at "
                f"{document.expires.isoformat()}: refused (the console re-signs it before "
                "it expires: is the P2P server cut off from the console, or this clock wrong?)",
                ignored,
            )
        if document.sequence < self.highest_sequence:
            raise DocumentStale(
                f"assignment document {document.sequence} is older than "
                f"{self.highest_sequence}: refused (replay?)",
                ignored,
            )
        if (
            document.sequence == self.highest_sequence
            and self.document_sha256
            and document.digest != self.document_sha256
        ):
            raise DocumentStale(
                f"assignment document {document.sequence} differs from the one accepted "
                "with the same sequence: refused",
                ignored,
            )
        trust = replace(
            candidate, highest_sequence=document.sequence, document_sha256=document.digest
        )
        return Accepted(trust, document, adopted, ignored)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "console_keys": [key.hex() for key in self.console_keys],
                "highest_sequence": self.highest_sequence,
                "document_sha256": self.document_sha256,
            },
            sort_keys=True,
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> TrustState:
        try:
            document = json.loads(text)
            if document.get("format") != _FORMAT:
                raise ValueError(f"format {document.get('format')!r} is not {_FORMAT}")
            keys = tuple(bytes.fromhex(key) for key in document["console_keys"])
            sequence = int(document["highest_sequence"])
            digest = str(document.get("document_sha256", ""))
            if not keys or any(len(key) != 32 for key in keys) or sequence < 0:
                raise ValueError("no console key, a key not of 32 bytes, or a negative sequence")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise TrustStateError(f"trust state is malformed ({error})") from None
        return cls(keys, sequence, digest)

    @classmethod
    def load(cls, path: Path) -> TrustState:
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            raise TrustStateError(
                f"{path}: this device is not enrolled (run `shoal client enroll BUNDLE`)"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise TrustStateError(f"{path}: cannot read the trust state ({error})") from None

    def save(self, path: Path) -> None:
        """Replace the file atomically."""
        write_private(path, self.to_json().encode())
