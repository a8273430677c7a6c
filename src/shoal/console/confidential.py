"""Confidential versions at the console: their content keys, and who receives them.

A confidential version is encrypted while it is packed (``shoal.core.packing.
pack_sealed_stream``); its content key is kept in ``application_versions.content_key``,
wrapped under the console's key-wrapping key (``DATA_DIR/content-keys.key``, made at
first start by ``shoal.console.state``), so a copy of the database alone (a backup, a
replica) reveals no content key.

Each time the console signs the assignment document, every confidential assignment
carries the content key sealed to each *recipient*: a licensed device the assignment
targets that has reported its X25519 public key (``devices.public_key``). A device that
reports its key after a signing gets its sealed key at the next one: the client report
that brings a new recipient records ``assignments_changed``, so the servers fetch a
newly signed document. A device retired in the console (``retired_devices``) is never
a recipient again, even when its server reports it anew.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal import topology
from shoal.console import db, records
from shoal.core.identity import PUBLIC_KEY_SIZE, device_id_of
from shoal.core.ids import ContentId
from shoal.core.sealing import (
    seal_content_key,
    unwrap_content_key,
    wrap_content_key,
)

log = logging.getLogger("shoal.console")

Recipients = dict[str, str]
"""Device ID (hex) -> its X25519 public key (hex)."""
RecipientState = dict[str, tuple[Any, ...]]


def wrap(wrapping_key: bytes, content_key: bytes, content_id: str) -> str:
    """The content key as stored in SQL (hex)."""
    return wrap_content_key(wrapping_key, content_key, bytes.fromhex(content_id)).hex()


def unwrap(wrapping_key: bytes, version: db.ApplicationVersion) -> bytes:
    assert version.content_key is not None
    return unwrap_content_key(
        wrapping_key, bytes.fromhex(version.content_key), bytes.fromhex(version.content_id)
    )


def recipients(
    session: Session, tree: topology.Topology, target_kind: str, target: str | None
) -> Recipients:
    """The licensed devices an assignment targets that have reported a valid public key,
    less those retired in the console."""
    targeted = set(records.targeted_devices(session, tree, target_kind, target))
    targeted -= set(session.scalars(select(db.RetiredDevice.device_id)))
    found: Recipients = {}
    if not targeted:
        return found
    rows = session.execute(
        select(db.Device.id, db.Device.public_key).where(
            db.Device.public_key.is_not(None), db.Device.licensed.is_(True)
        )
    ).all()
    for device_id, public_hex in rows:
        if (
            device_id in targeted
            and public_hex is not None
            and _key_names_device(device_id, public_hex)
        ):
            found[device_id] = public_hex
    return found


def _key_names_device(device_id: str, public_hex: str) -> bool:
    """A device ID is bound to its key: a record whose ID is not ``device_id_of`` its
    key gets nothing (the key's holder would have another device ID)."""
    try:
        public_raw = bytes.fromhex(public_hex)
    except ValueError:
        return False
    return len(public_raw) == PUBLIC_KEY_SIZE and device_id_of(public_raw).hex() == device_id


def recipients_field(
    session: Session,
    tree: topology.Topology,
    assignment: db.Assignment,
    version: db.ApplicationVersion,
) -> dict[str, Any] | None:
    """What the ``confidential`` field of an assignment entry depends on (None for
    plaintext content): the plaintext's size and SHA-256 and the recipients' public keys.

    Deterministic, so the console signs a new document only when it changes;
    ``sealed_field`` turns it into what the document carries when it is signed.
    """
    if version.content_key is None:
        return None
    return {
        "plaintext_size": version.plaintext_size,
        "plaintext_sha256": version.plaintext_sha256,
        "recipients": recipients(session, tree, assignment.target_kind, assignment.target),
    }


def sealed_field(
    session: Session, wrapping_key: bytes, content_id: str, field: dict[str, Any]
) -> dict[str, Any]:
    """The ``confidential`` field as signed: ``sealed_keys`` maps each recipient's device
    ID to the content key sealed to it (fresh randomness each signing); ``plaintext_size``
    and ``plaintext_sha256`` let the device check what it decrypts."""
    version = session.scalars(
        select(db.ApplicationVersion).where(
            db.ApplicationVersion.content_id == content_id,
            db.ApplicationVersion.content_key.is_not(None),
        )
    ).first()
    if version is None:
        raise LookupError(f"no confidential version has content {content_id}")
    content_key = unwrap(wrapping_key, version)
    digest = ContentId.from_hex(content_id).digest
    sealed = {
        device_id: seal_content_key(content_key, bytes.fromhex(public_hex), digest).hex()
        for device_id, public_hex in sorted(field["recipients"].items())
    }
    return {
        "plaintext_size": field["plaintext_size"],
        "plaintext_sha256": field["plaintext_sha256"],
        "sealed_keys": sealed,
    }


def recipient_state(session: Session, device_ids: Iterable[str]) -> RecipientState:
    """What decides whether these devices receive sealed keys: public key, office,
    licence (taken before a client report, compared after it)."""
    wanted = set(device_ids)
    if not wanted:
        return {}
    rows = session.execute(
        select(db.Device.id, db.Device.public_key, db.Device.office, db.Device.licensed).where(
            db.Device.id.in_(wanted)
        )
    ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def recipients_changed(
    session: Session, tree: topology.Topology, before: RecipientState, device_ids: Iterable[str]
) -> bool:
    """Did a report make one of ``device_ids`` a new recipient of a confidential
    assignment (a key reported or replaced, a move into a targeted office, a seat)?"""
    after = recipient_state(session, device_ids)
    changed = {
        device_id
        for device_id, state in after.items()
        if state != before.get(device_id) and state[0] is not None
    }
    if not changed:
        return False
    confidential = session.execute(
        select(db.Assignment.target_kind, db.Assignment.target)
        .join(db.ApplicationVersion, db.ApplicationVersion.id == db.Assignment.version_id)
        .where(db.ApplicationVersion.content_key.is_not(None))
    ).all()
    return any(
        changed & recipients(session, tree, target_kind, target).keys()
        for target_kind, target in confidential
    )
