"""Logging in and out, who is calling, changing one's password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from shoal.console import schemas
from shoal.console.auth import SESSION_COOKIE, Admin, Console, Database
from shoal.console.routes.common import ERRORS, source_of
from shoal.console.services import accounts

router = APIRouter(tags=["auth"])
THROTTLED: dict[int | str, dict[str, object]] = {**ERRORS, 429: {"model": schemas.Problem}}


@router.post("/auth/login", response_model=schemas.AdminOut, responses=THROTTLED)
def login(
    body: schemas.LoginRequest,
    request: Request,
    response: Response,
    state: Console,
    session: Database,
) -> schemas.AdminOut:
    """Check a username and password; set the session cookie for the browser.

    Throttled per user name and per source address: after a few failures each further
    attempt waits twice as long (429 with ``Retry-After``).
    """
    admin, token = accounts.log_in(state, session, source_of(request), body.username, body.password)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=state.config.session_hours * 3600,
        httponly=True,
        secure=state.config.tls,
        samesite="strict",
        path="/",
    )
    return schemas.AdminOut(username=admin.username, authenticated_by="password")


@router.post("/auth/logout", status_code=204, responses=ERRORS)
def logout(request: Request, response: Response, session: Database, _admin: Admin) -> None:
    """End the browser session."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        accounts.log_out(session, cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/auth/me", response_model=schemas.AdminOut, responses=ERRORS)
def me(admin: Admin) -> schemas.AdminOut:
    """Who is calling, and how they authenticated (session or token)."""
    return schemas.AdminOut(username=admin.username, authenticated_by=admin.authenticated_by)


@router.post("/auth/password", status_code=204, responses=THROTTLED)
def change_password(
    body: schemas.PasswordChange, request: Request, state: Console, session: Database, admin: Admin
) -> None:
    """Change the caller's password (at least 12 characters); throttled like the login."""
    accounts.change_password(
        state, session, source_of(request), admin.admin_id, body.current_password, body.new_password
    )
