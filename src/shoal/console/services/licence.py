"""The licence key: save it (activating waiting P2P servers) and show its state."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.console import db, schemas
from shoal.console.services.errors import Invalid
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind
from shoal.licensing import LicenceError, read_licence

log = logging.getLogger("shoal.console")


def licence_out(state: ConsoleState, session: Session) -> schemas.LicenceOut:
    """The licence: seats, seats used, seats over (overage), expiry, and what it means."""
    return schemas.LicenceOut(**state.licence_status(session).as_dict())  # type: ignore[arg-type]


def save_licence(state: ConsoleState, session: Session, key: str) -> schemas.LicenceOut:
    """Save a licence key: this activates the console and its P2P servers."""
    try:
        read_licence(key, state.vendor_key)
    except LicenceError as error:
        raise Invalid(str(error)) from None
    row = session.get(db.LicenceKey, 1)
    if row is None:
        session.add(db.LicenceKey(id=1, key_text=key.strip(), saved_at=state.clock()))
    else:
        row.key_text, row.saved_at = key.strip(), state.clock()
    state.record_change(session, ChangeKind.LICENCE_CHANGED)
    session.flush()
    licence = state.licence_status(session)
    if licence.active:
        now = state.clock()
        for server in session.scalars(select(db.Server).where(db.Server.activated_at.is_(None))):
            server.activated_at = now
    session.commit()
    (log.warning if licence.seats_over or not licence.active else log.info)(
        "licence saved: %s", licence.message
    )
    return schemas.LicenceOut(**licence.as_dict())  # type: ignore[arg-type]
