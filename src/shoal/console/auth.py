"""Who is calling: administrators (session cookie or API token) and P2P servers (shared key).

- Browser: ``POST /api/v1/auth/login`` sets the ``shoal_session`` cookie (HttpOnly,
  Secure over HTTPS, SameSite=Strict so other sites cannot ride on it). A write
  (POST, PUT, PATCH, DELETE) authenticated by that cookie must also come from the
  console's own origin (``Origin``, or ``Referer`` without it): SameSite does not stop
  another origin of the same site (a sibling host name, another port) from sending it.
- Scripts: ``Authorization: Bearer TOKEN`` with a token from ``POST /api/v1/tokens``.
- P2P servers: ``X-Shoal-Server-Key`` (the console's ``server-auth.key``),
  ``X-Shoal-Server-Id`` and ``X-Shoal-Version`` on every link request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.console import db
from shoal.console.security import same_secret, token_digest
from shoal.console.state import ConsoleState
from shoal.versions import IncompatibleVersion, InvalidVersion, Role, check_compatible

log = logging.getLogger("shoal.console")

SESSION_COOKIE = "shoal_session"
SERVER_KEY_HEADER = "X-Shoal-Server-Key"
SERVER_ID_HEADER = "X-Shoal-Server-Id"
VERSION_HEADER = "X-Shoal-Version"
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_console(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


Console = Annotated[ConsoleState, Depends(get_console)]


def get_database(state: Console) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


Database = Annotated[Session, Depends(get_database)]


@dataclass(frozen=True, slots=True)
class Identity:
    admin_id: int
    username: str
    authenticated_by: str


def _unauthorised(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def current_admin(request: Request, state: Console, session: Database) -> Identity:
    """The administrator behind this request, or 401 saying how to authenticate."""
    now = state.clock()
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorised("Authorization header must be 'Bearer <API token>'")
        row = session.scalar(
            select(db.ApiToken).where(db.ApiToken.token_hash == token_digest(token.strip()))
        )
        if row is None:
            raise _unauthorised("API token not recognised (revoked or mistyped)")
        if row.last_used_at is None or now - row.last_used_at > TOKEN_TOUCH_INTERVAL:
            row.last_used_at = now
            session.commit()
        admin = session.get(db.Admin, row.admin_id)
        if admin is None:
            raise _unauthorised("API token belongs to a removed administrator")
        return Identity(admin.id, admin.username, "token")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        login = session.get(db.LoginSession, token_digest(cookie))
        if login is None or login.expires_at <= now:
            raise _unauthorised("session expired: log in again at POST /api/v1/auth/login")
        admin = session.get(db.Admin, login.admin_id)
        if admin is None:
            raise _unauthorised("session belongs to a removed administrator")
        if request.method not in SAFE_METHODS:
            check_same_origin(request, state)
        return Identity(admin.id, admin.username, "session")
    raise _unauthorised(
        "not authenticated: send 'Authorization: Bearer <API token>' or log in at "
        "POST /api/v1/auth/login"
    )


Admin = Annotated[Identity, Depends(current_admin)]


def own_origins(request: Request, state: ConsoleState) -> set[str]:
    """The origins the console's pages are served from: this request's host (over
    HTTPS; also HTTP behind a TLS-terminating proxy) and ``--trusted-origin``."""
    host = request.headers.get("host", "").strip().lower()
    schemes = ("https",) if state.config.tls else ("https", "http")
    return {f"{scheme}://{host}" for scheme in schemes if host} | {
        origin.strip().lower().rstrip("/") for origin in state.config.trusted_origins
    }


def check_same_origin(request: Request, state: ConsoleState) -> None:
    """403 unless a cookie-authenticated write comes from the console's own origin."""
    claimed = request.headers.get("origin")
    header = "Origin"
    if claimed is None and request.headers.get("referer"):
        parts = urlsplit(request.headers["referer"])
        claimed, header = f"{parts.scheme}://{parts.netloc}", "Referer"
    own = own_origins(request, state)
    if claimed is not None and claimed.strip().lower() in own:
        return
    client_address = request.client.host if request.client else "unknown"
    log.warning(
        "refused a cross-origin write with a session cookie from %s: %s %s (%s %r)",
        client_address,
        request.method,
        request.url.path,
        header,
        claimed,
    )
    shown = f"{header} {claimed!r}" if claimed is not None else "no Origin or Referer header"
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"cross-origin request refused: a change made with the session cookie must come "
        f"from the console's own pages ({shown}; expected {' or '.join(sorted(own))}); "
        "scripts should send 'Authorization: Bearer <API token>' instead",
    )


@dataclass(frozen=True, slots=True)
class LinkedServer:
    server_id: str
    version: str
    address: str


def linked_server(request: Request, state: Console) -> LinkedServer:
    """A P2P server that presented the right key and a version this console accepts."""
    client_address = request.client.host if request.client else "unknown"
    given_key = request.headers.get(SERVER_KEY_HEADER)
    if not given_key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing {SERVER_KEY_HEADER}: a P2P server must present the console's "
            "authentication key",
        )
    if not same_secret(given_key.strip(), state.server_key):
        log.warning(
            "refused a P2P server at %s: its authentication key does not match this console's",
            client_address,
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "server authentication key mismatch: the key this P2P server presented is not "
            "the console's; copy the console's key (GET /api/v1/servers/auth-key, or the "
            "file server-auth.key in the console's data directory) into the server's settings",
        )
    server_id = (request.headers.get(SERVER_ID_HEADER) or "").strip()
    if not server_id or len(server_id) > 100:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{SERVER_ID_HEADER} must name the server (1-100 chars)"
        )
    version = (request.headers.get(VERSION_HEADER) or "").strip()
    try:
        check_compatible(Role.CONSOLE, Role.SERVER, version)
    except InvalidVersion:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{VERSION_HEADER} must carry the P2P server's version (MAJOR.MINOR.PATCH), "
            f"got {version!r}",
        ) from None
    except IncompatibleVersion as error:
        log.warning("refused P2P server %s at %s: %s", server_id, client_address, error)
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    return LinkedServer(server_id, version, client_address)


Server = Annotated[LinkedServer, Depends(linked_server)]
