"""The console's signing key and its rotation chain.

Theory of operation
-------------------
The console signs manifests and assignment documents with one Ed25519 key,
``DATA_DIR/console-signing.key``; clients pin its public key at enrollment. The
``console_keys`` table lists every key the console has had, oldest first; each later
key carries the rotation statement (``shoal.key_rotation``) the key before it signed.
Every signed assignment document carries the whole chain of statements, so a client
pinned to any earlier key walks to the current one.

Rotation (``POST /api/v1/console-key/rotate``, ``rotate``), crash-safe in this order:

1. the new key is written to ``console-signing.key.new``;
2. its row (with the statement the old key signed) is committed: from here on the new
   key *is* the console's key;
3. the old key file is kept as ``console-signing-<key id>.retired.key`` and the new one
   renamed into place (a start after a crash between 2 and 3 finishes the renames; a
   crash before 2 leaves the old key, and the stray ``.new`` file is removed);
4. every stored manifest is signed again with the new key (same body, same content
   ID), so a P2P server that fetches it afterwards verifies it with the key the
   console now announces. Clients accept manifests signed by any key of their chain
   (see ``shoal.client.trust``), so copies signed before the rotation stay usable.

The caller then signs the assignment document again with the new key
(``documents.signed_assignments(..., force=True)``), which tells the P2P servers.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shoal.console import db
from shoal.core.errors import ShoalError
from shoal.core.manifest import decode_manifest_file
from shoal.core.signing import SigningKey, VerifyKey
from shoal.key_rotation import sign_rotation

if TYPE_CHECKING:
    from shoal.console.state import ConsoleState

log = logging.getLogger("shoal.console")

KEY_FILE = "console-signing.key"
NEW_KEY_FILE = "console-signing.key.new"


class KeyChainBroken(ShoalError):
    """The key file is not the newest key of the console's rotation chain."""


def rotation_entries(session: Session) -> list[dict[str, str]]:
    """Every rotation statement, oldest first, as it travels in the envelope."""
    rows = session.scalars(
        select(db.ConsoleKey).where(db.ConsoleKey.statement.is_not(None)).order_by(db.ConsoleKey.id)
    ).all()
    return [
        {"statement": row.statement, "signature": row.signature}
        for row in rows
        if row.statement is not None and row.signature is not None
    ]


def public_keys(session: Session) -> list[str]:
    """Every key the console has signed with (hex), oldest first."""
    return list(session.scalars(select(db.ConsoleKey.public_key).order_by(db.ConsoleKey.id)))


def _install(data_dir: Path, old: VerifyKey | None, new: SigningKey) -> None:
    """Step 3: keep the old key file, move the new one into place (atomic renames)."""
    current, pending = data_dir / KEY_FILE, data_dir / NEW_KEY_FILE
    if old is not None and current.exists():
        os.replace(current, data_dir / f"console-signing-{old.key_id.hex()}.retired.key")
    os.replace(pending, current)
    new.verify_key.save(data_dir / f"{KEY_FILE}.pub")
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def open_key_chain(
    data_dir: Path, sessions: sessionmaker[Session], key: SigningKey, now: datetime
) -> SigningKey:
    """At start: finish an interrupted rotation, record the first key, check the chain.

    Returns the key to sign with (the newest of the chain).
    """
    with sessions.begin() as session:
        newest = session.scalars(select(db.ConsoleKey).order_by(db.ConsoleKey.id.desc())).first()
        pending = data_dir / NEW_KEY_FILE
        if pending.exists():
            candidate = SigningKey.load(pending)
            if newest is not None and newest.public_key == candidate.verify_key.raw.hex():
                log.warning("finishing the console key rotation interrupted by a stop")
                _install(data_dir, key.verify_key, candidate)
                key = candidate
            else:
                pending.unlink()  # the rotation never committed: the old key stays
        if newest is None:
            session.add(db.ConsoleKey(public_key=key.verify_key.raw.hex(), created_at=now))
        elif newest.public_key != key.verify_key.raw.hex():
            raise KeyChainBroken(
                f"{data_dir / KEY_FILE} (key {key.verify_key.key_id.hex()}) is not the "
                "console's current signing key recorded in the database: restore the key "
                "file from a backup (clients pinned the recorded key and would refuse "
                "everything this one signs)"
            )
    return key


def rotate(state: ConsoleState) -> tuple[VerifyKey, VerifyKey]:
    """Replace the console's signing key (see the module docstring): (old, new)."""
    data_dir = state.config.data_dir
    with state.key_lock:
        old = state.signing_key
        new = SigningKey.generate()
        new.save(data_dir / NEW_KEY_FILE)
        now = state.clock()
        with state.sessions.begin() as session:
            number = session.scalar(select(func.count()).select_from(db.ConsoleKey)) or 0
            statement = sign_rotation(old, new.verify_key, number, now)
            session.add(
                db.ConsoleKey(
                    public_key=new.verify_key.raw.hex(),
                    statement=statement["statement"],
                    signature=statement["signature"],
                    created_at=now,
                )
            )
        _install(data_dir, old.verify_key, new)
        state.signing_key = new
        resigned = resign_manifests(state)
    log.warning(
        "console signing key rotated: %s -> %s (rotation %d, %d manifests signed again)",
        old.verify_key.key_id.hex(),
        new.verify_key.key_id.hex(),
        number,
        resigned,
    )
    return old.verify_key, new.verify_key


def resign_manifests(state: ConsoleState) -> int:
    """Step 4: every stored manifest not signed by the current key, same body, signed
    by it (also run at start when the console has rotated, to finish a step 4 cut
    short by a stop). Returns how many were signed again."""
    key = state.signing_key
    count = 0
    with state.content_lock, state.sessions() as session:
        for content_id in session.scalars(select(db.ApplicationVersion.content_id).distinct()):
            path = state.content.manifest_path(content_id)
            try:
                manifest_file = decode_manifest_file(path.read_bytes())
            except (OSError, ShoalError) as error:
                log.error("manifest %s not signed again: %s", content_id[:12], error)
                continue
            trailer = manifest_file.trailer
            if trailer is not None and trailer.key_id == key.verify_key.key_id:
                continue
            state.content.replace_manifest(content_id, key.sign(manifest_file.manifest).encode())
            count += 1
    return count


def rotated(state: ConsoleState) -> bool:
    """Has this console ever rotated its key?"""
    with state.sessions() as session:
        return (session.scalar(select(func.count()).select_from(db.ConsoleKey)) or 0) > 1
