"""API tokens for scripts: create (shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, Pages, RowIdPath
from shoal.console.services import accounts

router = APIRouter(tags=["auth"])


@router.post("/tokens", status_code=201, response_model=schemas.TokenCreated, responses=ERRORS)
def create_token(
    body: schemas.TokenRequest, state: Console, session: Database, admin: Admin
) -> schemas.TokenCreated:
    """Create an API token for scripts; the token is shown in this answer only."""
    return accounts.create_token(state, session, admin.admin_id, body.name)


@router.get("/tokens", response_model=schemas.Page[schemas.TokenOut], responses=ERRORS)
def list_tokens(session: Database, admin: Admin, pages: Pages) -> schemas.Page[schemas.TokenOut]:
    """The caller's API tokens (never the tokens themselves)."""
    return accounts.list_tokens(session, admin.admin_id, pages.limit, pages.offset)


@router.delete("/tokens/{token_id}", status_code=204, responses=ERRORS)
def revoke_token(token_id: RowIdPath, session: Database, admin: Admin) -> None:
    """Revoke one of the caller's API tokens."""
    accounts.revoke_token(session, admin.admin_id, token_id)
