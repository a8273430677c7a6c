"""The client release: ``GET, PUT, DELETE /api/v1/client-release``
(``shoal.console.services.client_release``; docs/operations.md)."""

from __future__ import annotations

from fastapi import APIRouter, status

from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS
from shoal.console.services import client_release
from shoal.console.services.client_release import ClientReleaseOut, ClientReleaseRequest

router = APIRouter(tags=["client release"])


@router.get("/client-release", response_model=ClientReleaseOut | None, responses=ERRORS)
def get_client_release(session: Database, _admin: Admin) -> ClientReleaseOut | None:
    """The version marked as the client release, and devices by reported version; null
    when none is marked."""
    return client_release.get(session)


@router.put("/client-release", response_model=ClientReleaseOut, responses=ERRORS)
def put_client_release(
    body: ClientReleaseRequest, state: Console, session: Database, _admin: Admin
) -> ClientReleaseOut:
    """Mark a version of the ``shoal`` application as the client release and assign it to
    everyone; 409 (naming the servers to upgrade) while a P2P server is older."""
    return client_release.mark(state, session, body)


@router.delete("/client-release", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def delete_client_release(state: Console, session: Database, _admin: Admin) -> None:
    """Stop offering the release (clients that upgraded keep their version)."""
    client_release.unmark(state, session)
