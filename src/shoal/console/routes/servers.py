"""P2P servers: the list with health, the key to configure, enrollment bundles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, Pages
from shoal.console.services import servers

router = APIRouter(tags=["servers"])
ServerIdPath = Annotated[str, Path(min_length=1, max_length=100)]


@router.get("/servers", response_model=schemas.Page[schemas.ServerOut], responses=ERRORS)
def list_servers(
    state: Console, session: Database, _admin: Admin, pages: Pages
) -> schemas.Page[schemas.ServerOut]:
    """Registered P2P servers, their versions, activation and whether they are online."""
    return servers.list_servers(state, session, pages.limit, pages.offset)


@router.get("/servers/auth-key", response_model=schemas.ServerKeyOut, responses=ERRORS)
def server_auth_key(state: Console, _admin: Admin) -> schemas.ServerKeyOut:
    """The shared key to configure on every P2P server."""
    return schemas.ServerKeyOut(key=state.server_key)


@router.get(
    "/servers/{server_id}/enrollment-bundle",
    response_model=schemas.EnrollmentBundle,
    responses=ERRORS,
)
def enrollment_bundle(
    server_id: ServerIdPath, state: Console, session: Database, _admin: Admin
) -> schemas.EnrollmentBundle:
    """What a device needs to join this P2P server: save it to a file (mode 0600) and run
    ``shoal client enroll FILE``. It pins the console key on the device and holds the
    enrollment token (a secret: never put it on a command line)."""
    return servers.enrollment_bundle(state, session, server_id)


@router.delete("/servers/{server_id}", status_code=204, responses=ERRORS)
def forget_server(server_id: ServerIdPath, session: Database, _admin: Admin) -> None:
    """Forget a decommissioned P2P server (it registers again if it comes back)."""
    servers.forget_server(session, server_id)
