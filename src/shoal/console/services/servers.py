"""P2P servers: the list (with health), the key they present, the enrollment bundle."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.console import db, schemas
from shoal.console.enrollment_bundle import build_bundle
from shoal.console.services.paging import page_of
from shoal.console.services.rows import get_row
from shoal.console.state import ConsoleState

log = logging.getLogger("shoal.console")


def server_out(state: ConsoleState, row: db.Server) -> schemas.ServerOut:
    window = timedelta(seconds=state.config.online_window_seconds)
    return schemas.ServerOut(
        id=row.id,
        name=row.name,
        address=row.address,
        version=row.version,
        registered_at=row.registered_at,
        last_seen=row.last_seen,
        activated=row.activated_at is not None,
        online=state.clock() - row.last_seen <= window,
    )


def list_servers(
    state: ConsoleState, session: Session, limit: int, offset: int
) -> schemas.Page[schemas.ServerOut]:
    """Registered P2P servers by name, their versions, activation and health."""
    rows, total = page_of(
        session, select(db.Server).order_by(db.Server.name, db.Server.id), limit, offset
    )
    return schemas.Page(
        items=[server_out(state, row) for row in rows], total=total, limit=limit, offset=offset
    )


def forget_server(session: Session, server_id: str) -> None:
    """Remove a decommissioned server's registration (it registers again if it returns).

    Its devices stay, with their seats, until they are retired or another server
    reports them.
    """
    row = get_row(session, db.Server, server_id, f"P2P server {server_id!r}")
    session.delete(row)
    session.commit()
    log.info("forgot P2P server %s (%s)", server_id, row.name)


def enrollment_bundle(
    state: ConsoleState, session: Session, server_id: str
) -> schemas.EnrollmentBundle:
    row = get_row(session, db.Server, server_id, f"P2P server {server_id!r}")
    return build_bundle(state, session, row)
