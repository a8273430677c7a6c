"""The signed assignment document: its sequence number, its expiry, when it is signed.

Theory of operation
-------------------
The console keeps the newest signed assignment document in ``signed_documents`` (row
``assignments``): the envelope P2P servers relay, its sequence number, its expiry, and
the canonical JSON of the assignments it lists (``body``). ``signed_assignments``
answers ``GET /api/v1/link/assignments`` with the stored envelope, and signs a new one
first when

- what the document would say differs from ``body`` (an assignment, version, office or
  signed manifest file changed),
- the console key rotated since it was signed, or
- less than half of its validity is left (``ConsoleConfig.document_validity_seconds``,
  7 days by default): a document is signed again even when nothing changed, so the
  servers always relay one that clients accept.

Each signing takes ``sequence = max(previous + 1, Unix seconds now)``: strictly
increasing, and still above everything signed before if the database is restored
from an older backup (with a correct clock). The row is updated only if its sequence
is still the one read (a conditional UPDATE), so two console processes or threads
never sign two documents with one number, on SQLite or PostgreSQL; the loser reads
the winner's document. Every new document also appends ``assignments_changed`` to the
change feed, in the same transaction, so every P2P server fetches it.

``refresh_if_due`` runs when a P2P server starts a long poll of the change feed: the
half-life refresh needs no timer of its own, and happens only while servers are there
to relay it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shoal.assignments import DOCUMENT_FORMAT, canonical_json, sign_assignments
from shoal.console import confidential, db, keys, records, schemas
from shoal.console.content import ContentDirectory
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind
from shoal.core.errors import ShoalError

log = logging.getLogger("shoal.console")

ASSIGNMENTS = "assignments"
SIGNING_ATTEMPTS = 5


class DocumentContended(ShoalError):
    """Other writers kept signing the document first (retry)."""


def assignment_entries(session: Session, content: ContentDirectory) -> list[dict[str, Any]]:
    """Every assignment as the document lists it (office targets list their sub-offices;
    a confidential one lists its recipients, whose keys ``_sealed`` seals at signing;
    each names its signed manifest file, fetched by clients in one round trip)."""
    tree = records.load_topology(session)
    entries = []
    for assignment in session.scalars(select(db.Assignment).order_by(db.Assignment.id)):
        version = session.get_one(db.ApplicationVersion, assignment.version_id)
        entry: dict[str, Any] = {
            "id": assignment.id,
            "content_id": version.content_id,
            "target_kind": assignment.target_kind,
            "target": assignment.target,
            "offices": sorted(tree.subtree(assignment.target or ""))
            if assignment.target_kind == schemas.TargetKind.OFFICE
            else None,
            "background": assignment.background,
        }
        manifest = content.manifest_ref(version.content_id)
        if manifest is not None:
            entry["manifest"] = manifest.entry()
        if version.install_spec is not None:
            entry["install"] = version.install_spec  # signed: clients run only this
        field = confidential.recipients_field(session, tree, assignment, version)
        if field is not None:
            entry["confidential"] = field
        entries.append(entry)
    return entries


def _sealed(
    state: ConsoleState, session: Session, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The entries as signed: each confidential one carries the content key sealed to
    each recipient instead of the recipients' public keys."""
    return [
        {
            **entry,
            "confidential": confidential.sealed_field(
                session, state.content_wrapping_key, entry["content_id"], entry["confidential"]
            ),
        }
        if "confidential" in entry
        else entry
        for entry in entries
    ]


def _validity(state: ConsoleState) -> timedelta:
    return timedelta(seconds=state.config.document_validity_seconds)


def _due(state: ConsoleState, row: db.SignedDocument, now: datetime) -> bool:
    """Signed by a retired key, or less than half of its validity left."""
    return (
        row.key_id != state.signing_key.verify_key.key_id.hex()
        or row.expires_at - now < _validity(state) / 2
    )


def _envelope(row: db.SignedDocument) -> schemas.SignedAssignments:
    return schemas.SignedAssignments.model_validate(row.envelope)


def signed_assignments(state: ConsoleState, force: bool = False) -> schemas.SignedAssignments:
    """The current signed assignment document, signed again first when needed (or
    ``force``: after a key rotation)."""
    return _current(state, force)[0]


def _current(state: ConsoleState, force: bool) -> tuple[schemas.SignedAssignments, bool]:
    """The document, and whether this call signed it."""
    for _attempt in range(SIGNING_ATTEMPTS):
        with state.key_lock, state.sessions() as session:
            now = state.clock()
            row = session.get(db.SignedDocument, ASSIGNMENTS)
            entries = assignment_entries(session, state.content)
            body = canonical_json(entries)
            if row is not None and not force and row.body == body and not _due(state, row, now):
                return _envelope(row), False
            signed = _sign(state, session, row, entries, body, now)
            if signed is not None:
                session.commit()
                return signed, True
            session.rollback()
            force = False  # someone else signed meanwhile: theirs is as new
    raise DocumentContended("the assignment document kept being signed concurrently: retry")


def _sign(
    state: ConsoleState,
    session: Session,
    row: db.SignedDocument | None,
    entries: list[dict[str, Any]],
    body: str,
    now: datetime,
) -> schemas.SignedAssignments | None:
    """Sign the next document; None when another writer got there first."""
    previous = row.sequence if row is not None else 0
    sequence = max(previous + 1, int(now.timestamp()))
    expires = now + _validity(state)
    document = {
        "format": DOCUMENT_FORMAT,
        "sequence": sequence,
        "generated_at": now.isoformat(),
        "expires": expires.isoformat(),
        "console_keys": keys.public_keys(session),
        "assignments": _sealed(state, session, entries),
    }
    key = state.signing_key
    envelope = sign_assignments(key, document, keys.rotation_entries(session))
    values = {
        "sequence": sequence,
        "body": body,
        "envelope": envelope,
        "key_id": key.verify_key.key_id.hex(),
        "signed_at": now,
        "expires_at": expires,
    }
    if row is None:
        session.add(db.SignedDocument(name=ASSIGNMENTS, **values))
        try:
            session.flush()
        except IntegrityError:
            return None
    else:
        result = session.execute(
            update(db.SignedDocument)
            .where(
                db.SignedDocument.name == ASSIGNMENTS,
                db.SignedDocument.sequence == previous,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
    state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)
    log.info("signed assignment document %d (expires %s)", sequence, expires.isoformat())
    return schemas.SignedAssignments.model_validate(envelope)


def refresh_if_due(state: ConsoleState) -> bool:
    """Sign the document again if it is due (see the module docstring); True if signed."""
    with state.sessions() as session:
        row = session.get(db.SignedDocument, ASSIGNMENTS)
        if row is None or not _due(state, row, state.clock()):
            return False
    return _current(state, False)[1]
