"""Administrators, their login sessions, passwords and API tokens."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from shoal.console import db, schemas
from shoal.console.security import hash_password, new_token, password_matches, token_digest
from shoal.console.services.errors import Conflict, NotFound, Refused, Throttled, WrongCredentials
from shoal.console.services.paging import page_of
from shoal.console.services.rows import get_row
from shoal.console.state import ConsoleState

log = logging.getLogger("shoal.console")


def check_password(
    state: ConsoleState, source: str, username: str, password_hash: str | None, password: str
) -> bool:
    """Check a password under the login throttle: ``Throttled`` while the user name or
    the source address is blocked; an unknown user (no hash) costs the same time."""
    user_key, source_key = state.login_throttle.keys_for(username, source)
    wait = state.login_throttle.attempt((user_key, source_key), state.clock().timestamp())
    if wait:
        raise Throttled(wait)
    if password_matches(password_hash, password):
        state.login_throttle.succeeded(user_key, source_key)
        return True
    failures = state.login_throttle.failures(user_key)
    (log.warning if failures <= state.config.login_failures else log.info)(
        "failed login for %r from %s (%d in a row for this user name)", username, source, failures
    )
    return False


def log_in(
    state: ConsoleState, session: Session, source: str, username: str, password: str
) -> tuple[db.Admin, str]:
    """The administrator and a new session token (to set as the cookie)."""
    admin = session.scalar(select(db.Admin).where(db.Admin.username == username))
    password_hash = admin.password_hash if admin is not None else None
    if not check_password(state, source, username, password_hash, password) or admin is None:
        raise WrongCredentials("wrong username or password")
    token = new_token()
    now = state.clock()
    session.add(
        db.LoginSession(
            token_hash=token_digest(token),
            admin_id=admin.id,
            created_at=now,
            expires_at=now + timedelta(hours=state.config.session_hours),
        )
    )
    session.commit()
    return admin, token


def log_out(session: Session, token: str) -> None:
    session.execute(
        delete(db.LoginSession).where(db.LoginSession.token_hash == token_digest(token))
    )
    session.commit()


def change_password(
    state: ConsoleState, session: Session, source: str, admin_id: int, current: str, new: str
) -> None:
    row = session.get_one(db.Admin, admin_id)
    if not check_password(state, source, row.username, row.password_hash, current):
        raise Refused("current password is wrong")
    row.password_hash = hash_password(new)
    session.commit()


def _admin_listed(row: db.Admin) -> schemas.AdminListed:
    return schemas.AdminListed(id=row.id, username=row.username, created_at=row.created_at)


def list_admins(session: Session, limit: int, offset: int) -> schemas.Page[schemas.AdminListed]:
    rows, total = page_of(session, select(db.Admin).order_by(db.Admin.id), limit, offset)
    return schemas.Page(
        items=[_admin_listed(row) for row in rows], total=total, limit=limit, offset=offset
    )


def add_admin(state: ConsoleState, session: Session, body: schemas.NewAdmin) -> schemas.AdminListed:
    if session.scalar(select(db.Admin).where(db.Admin.username == body.username)):
        raise Conflict(f"administrator {body.username!r} exists")
    row = db.Admin(
        username=body.username, password_hash=hash_password(body.password), created_at=state.clock()
    )
    session.add(row)
    session.commit()
    log.info("administrator %r added", body.username)
    return _admin_listed(row)


def remove_admin(session: Session, admin_id: int, caller_id: int) -> None:
    """Remove an administrator with their sessions and tokens; never the caller, so the
    console always keeps one."""
    if admin_id == caller_id:
        raise Conflict("you cannot remove yourself: another administrator must do it")
    row = get_row(session, db.Admin, admin_id, f"administrator {admin_id}")
    session.execute(delete(db.LoginSession).where(db.LoginSession.admin_id == admin_id))
    session.execute(delete(db.ApiToken).where(db.ApiToken.admin_id == admin_id))
    session.delete(row)
    session.commit()
    log.info("administrator %r removed", row.username)


def admin_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(db.Admin)) or 0)


def create_token(
    state: ConsoleState, session: Session, admin_id: int, name: str
) -> schemas.TokenCreated:
    token = new_token("shoal_")
    row = db.ApiToken(
        name=name, token_hash=token_digest(token), admin_id=admin_id, created_at=state.clock()
    )
    session.add(row)
    session.commit()
    return schemas.TokenCreated(
        id=row.id, name=row.name, created_at=row.created_at, last_used_at=None, token=token
    )


def list_tokens(
    session: Session, admin_id: int, limit: int, offset: int
) -> schemas.Page[schemas.TokenOut]:
    query = select(db.ApiToken).where(db.ApiToken.admin_id == admin_id).order_by(db.ApiToken.id)
    rows, total = page_of(session, query, limit, offset)
    items = [
        schemas.TokenOut(
            id=row.id, name=row.name, created_at=row.created_at, last_used_at=row.last_used_at
        )
        for row in rows
    ]
    return schemas.Page(items=items, total=total, limit=limit, offset=offset)


def revoke_token(session: Session, admin_id: int, token_id: int) -> None:
    row = session.get(db.ApiToken, token_id)
    if row is None or row.admin_id != admin_id:
        raise NotFound(f"API token {token_id}")
    session.delete(row)
    session.commit()
