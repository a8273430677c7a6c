"""What this client is assigned: the console's signed document, checked and applied.

Theory of operation
-------------------
Each check-in answer carries the SHA-256 of the current assignment document (and the
peers the server banned in the office). When it changed, ``AssignmentsMachine`` fetches
the document as a blob (``shoal.client.blobs``), and accepts it only if it is signed by
the console key pinned at enrollment (``TrustState``), fresh, and not older than the
newest accepted; it follows the console's key rotations. What it accepted becomes
``AssignmentsAccepted`` (content -> background?, this device's sealed keys of
confidential content, and where the document names it, each content's signed manifest
blob), which the agent hands to the downloads. The document accepted last is kept on
disk by the shell (``shoal.client.kept_assignments``): a restarted client that is
named the same document takes its kept bytes, checked the same way, instead of a fetch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shoal.assignments import (
    AssignmentsInvalid,
    ManifestRef,
    SealedContent,
    assignments_for,
    read_envelope,
)
from shoal.client.blobs import AssignmentsBlob, BlobFetcher
from shoal.client.config import AgentConfig
from shoal.client.control import ControlClient
from shoal.client.counters import AgentCounters
from shoal.client.trust import DocumentRefused, TrustState
from shoal.core.ids import ContentId
from shoal.core.signing import VerifyKey
from shoal.install_spec import InstallSpec
from shoal.protocol.transfer import Address
from shoal.wire.control import CheckInReply


@dataclass(frozen=True, slots=True)
class AssignmentsAccepted:
    """A new assignment document was accepted: this device's assignments from now on."""

    assigned: dict[ContentId, bool]
    """Content ID -> background (True) or foreground download."""
    sealed: dict[ContentId, SealedContent]
    """Confidential content: its sealing (with this device's key, once it has one)."""
    installs: dict[ContentId, InstallSpec | None]
    """Each assigned content's install specification, as the console signed it."""
    manifests: dict[ContentId, ManifestRef] = field(default_factory=dict)
    """Each assigned content's signed manifest blob, where the document names it."""


class AssignmentsMachine:
    """The signed assignment document and the trust it rests on."""

    def __init__(
        self,
        config: AgentConfig,
        control: ControlClient,
        blobs: BlobFetcher,
        counters: AgentCounters,
    ) -> None:
        self.config = config
        self.control = control
        self.blobs = blobs
        self.counters = counters
        self.trust: TrustState = config.trust
        """Changes when a document is accepted; the shell saves it (``TrustState.save``)."""
        self.note = ""
        self.manifest_keys = [VerifyKey.from_raw(key) for key in config.trust.console_keys]
        """The keys a manifest may be signed by (the current document says)."""
        self.digest: bytes | None = None
        """SHA-256 of the document accepted last."""
        self.document: bytes | None = None
        """The document accepted last: the shell keeps it on disk for the next process."""
        self.kept: bytes | None = None
        """The document an earlier process accepted (the shell read it from disk): taken
        instead of a fetch if the first check-in answer names it, else dropped."""

    def on_check_in_reply(
        self, reply: CheckInReply, server: Address, office: str | None, now: float
    ) -> AssignmentsAccepted | None:
        """When the document's digest changed: the kept document if the answer names
        it and it is accepted (``on_document``), else fetch it (one fetch at a time)."""
        if reply.assignments_length == 0 or reply.assignments_sha256 == self.digest:
            return None
        if self.kept is not None and hashlib.sha256(self.kept).digest() == reply.assignments_sha256:
            accepted = self.take_kept(office, now)
            if accepted is not None:
                return accepted
        self.kept = None  # not the document the server names
        if self.blobs.fetching_assignments():
            return None
        self.blobs.fetch(
            AssignmentsBlob(reply.assignments_sha256), reply.assignments_length, server, now
        )
        return None

    def take_kept(self, office: str | None, now: float) -> AssignmentsAccepted | None:
        """The kept document, checked as a fetched one is (``on_document``); taken once."""
        kept, self.kept = self.kept, None
        if kept is None:
            return None
        blob = AssignmentsBlob(hashlib.sha256(kept).digest())
        accepted = self.on_document(blob, kept, office, now)
        if accepted is not None:
            self.counters.documents_kept += 1
            self.note += " (the copy kept on disk)"
        return accepted

    def on_document(
        self, blob: AssignmentsBlob, data: bytes, office: str | None, now: float
    ) -> AssignmentsAccepted | None:
        """Accept the document only if it is signed by the current key, fresh and not
        older than the newest accepted; else keep every trusted state as it is."""
        wall = datetime.fromtimestamp(now + (self.control.wall_offset or 0.0), UTC)
        try:
            accepted = self.trust.accept_assignments(read_envelope(data), wall)
            mine = assignments_for(accepted.document, self.config.device_hex, office)
        except DocumentRefused as error:
            self._refuse(str(error), error.rotations_ignored)
            return None
        except AssignmentsInvalid as error:
            self._refuse(str(error), 0)
            return None
        self.counters.rotations_ignored += accepted.rotations_ignored
        self.trust = accepted.trust
        document = accepted.document
        self.manifest_keys = self.trust.manifest_keys(document)
        self.note = (
            f"assignment document {document.sequence} accepted, "
            f"expires {document.expires.isoformat()}"
        )
        if accepted.rotations_adopted:
            # Server certificates made after the rotation are signed by the new key.
            self.control.console_keys = tuple(
                VerifyKey.from_raw(key) for key in self.trust.console_keys
            )
            self.note += f"; console key rotated to {self.trust.console_key.key_id.hex()}"
        self.digest, self.document = blob.digest, data
        return AssignmentsAccepted(
            {a.content_id: a.background for a in mine},
            {a.content_id: a.confidential for a in mine if a.confidential},
            {a.content_id: a.install for a in mine},
            {a.content_id: a.manifest for a in mine if a.manifest},
        )

    def status(self) -> dict[str, Any]:
        """The trust ``shoal client status`` shows: the pinned key, the newest document
        accepted, and what was refused or taken from the kept copy."""
        trust = self.trust
        return {
            "console_key": trust.console_key.key_id.hex(),
            "keys_pinned": len(trust.console_keys),
            "highest_sequence": trust.highest_sequence,
            "document_note": self.note,
            "documents_refused": self.counters.documents_refused,
            "documents_kept": self.counters.documents_kept,
            "rotations_ignored": self.counters.rotations_ignored,
        }

    def _refuse(self, message: str, rotations_ignored: int) -> None:
        self.counters.documents_refused += 1
        self.counters.rotations_ignored += rotations_ignored
        self.note = message
