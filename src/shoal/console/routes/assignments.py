"""Assignments: create, list with progress, one with per-office progress, withdraw."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, Pages, RowIdPath
from shoal.console.services import assignments

router = APIRouter(tags=["assignments"])


@router.post(
    "/assignments", status_code=201, response_model=schemas.AssignmentOut, responses=ERRORS
)
def create_assignment(
    body: schemas.AssignmentRequest, state: Console, session: Database, _admin: Admin
) -> schemas.AssignmentOut:
    """Assign an application version to a device, an office (and below) or everyone."""
    return assignments.create_assignment(state, session, body)


@router.get("/assignments", response_model=schemas.Page[schemas.AssignmentOut], responses=ERRORS)
def list_assignments(
    state: Console,
    session: Database,
    _admin: Admin,
    pages: Pages,
    version_id: Annotated[
        int | None, Query(ge=1, le=schemas.MAX_ID, description="only this version's")
    ] = None,
) -> schemas.Page[schemas.AssignmentOut]:
    """Assignments, newest first, with progress aggregated from what servers reported."""
    return assignments.list_assignments(state, session, pages.limit, pages.offset, version_id)


@router.get("/assignments/{assignment_id}", response_model=schemas.AssignmentOut, responses=ERRORS)
def get_assignment(
    assignment_id: RowIdPath, state: Console, session: Database, _admin: Admin
) -> schemas.AssignmentOut:
    """One assignment with its progress, overall and per office."""
    return assignments.get_assignment(state, session, assignment_id)


@router.delete("/assignments/{assignment_id}", status_code=204, responses=ERRORS)
def delete_assignment(
    assignment_id: RowIdPath, state: Console, session: Database, _admin: Admin
) -> None:
    """Withdraw an assignment (clients keep what they cached)."""
    assignments.delete_assignment(state, session, assignment_id)
