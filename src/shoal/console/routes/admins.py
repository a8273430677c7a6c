"""Administrators: list, add, remove."""

from __future__ import annotations

from fastapi import APIRouter

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, Pages, RowIdPath
from shoal.console.services import accounts

router = APIRouter(tags=["auth"])


@router.get("/admins", response_model=schemas.Page[schemas.AdminListed], responses=ERRORS)
def list_admins(
    session: Database, _admin: Admin, pages: Pages
) -> schemas.Page[schemas.AdminListed]:
    """Administrators, oldest first."""
    return accounts.list_admins(session, pages.limit, pages.offset)


@router.post("/admins", status_code=201, response_model=schemas.AdminListed, responses=ERRORS)
def add_admin(
    body: schemas.NewAdmin, state: Console, session: Database, _admin: Admin
) -> schemas.AdminListed:
    """Add an administrator."""
    return accounts.add_admin(state, session, body)


@router.delete("/admins/{admin_id}", status_code=204, responses=ERRORS)
def remove_admin(admin_id: RowIdPath, session: Database, admin: Admin) -> None:
    """Remove another administrator, with their sessions and API tokens."""
    accounts.remove_admin(session, admin_id, admin.admin_id)
