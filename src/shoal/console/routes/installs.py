"""Install specifications and install results: ``/api/v1/versions/{id}/install``,
``/api/v1/installs`` (filterable, a page at a time), and per assignment and per device.
The logic is in ``shoal.console.services.installs``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shoal.console import records, schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, DeviceIdPath, Pages, RowIdPath
from shoal.console.services import installs
from shoal.console.services.installs import (  # re-exported: their users import them here
    UNINSTALL_STATES,
    record_reports,
    set_spec_of_upload,
    set_version_spec,
    spec_from_query,
    validated_spec,
)

__all__ = [
    "UNINSTALL_STATES",
    "record_reports",
    "router",
    "set_spec_of_upload",
    "set_version_spec",
    "spec_from_query",
    "validated_spec",
]

router = APIRouter(prefix="/api/v1", tags=["installs"])
StateFilter = Annotated[
    str | None,
    Query(
        alias="state",
        pattern=r"^[a-z_]{1,20}$",
        description="only this state (pending, downloading, installed, failed, ...)",
    ),
]
Installs = schemas.Page[schemas.InstallResultOut]


@router.get(
    "/versions/{version_id}/install", response_model=schemas.InstallSpecOut, responses=ERRORS
)
def get_install_spec(
    version_id: RowIdPath, session: Database, _admin: Admin
) -> schemas.InstallSpecOut:
    """A version's install specification (``install`` is null when it has none)."""
    return installs.get_spec(session, version_id)


@router.put(
    "/versions/{version_id}/install", response_model=schemas.InstallSpecOut, responses=ERRORS
)
def put_install_spec(
    version_id: RowIdPath,
    body: schemas.InstallSpecIn,
    state: Console,
    session: Database,
    _admin: Admin,
) -> schemas.InstallSpecOut:
    """Set a version's install specification: the devices it is assigned to run it once
    they hold the version (a device that already installed it does not run it again)."""
    return installs.put_spec(state, session, version_id, body.model_dump())


@router.delete("/versions/{version_id}/install", status_code=204, responses=ERRORS)
def delete_install_spec(
    version_id: RowIdPath, state: Console, session: Database, _admin: Admin
) -> None:
    """Remove a version's install specification (nothing installed is uninstalled)."""
    installs.delete_spec(state, session, version_id)


@router.get("/installs", response_model=Installs, responses=ERRORS)
def list_installs(
    state: Console,
    session: Database,
    _admin: Admin,
    pages: Pages,
    assignment: Annotated[int | None, Query(ge=1, le=schemas.MAX_ID)] = None,
    device: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    install_state: StateFilter = None,
    application: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> Installs:
    """Every assigned version on every targeted device (newest assignment first),
    filterable by assignment, device, state and application; then the uninstalls of
    versions no longer assigned (``assignment_id`` null)."""
    wanted = installs.InstallFilter(assignment, device, install_state, application)
    tree = records.load_topology(session, state.topology_cache)
    return installs.list_installs(session, wanted, pages.limit, pages.offset, tree)


@router.get("/assignments/{assignment_id}/installs", response_model=Installs, responses=ERRORS)
def assignment_installs(
    assignment_id: RowIdPath,
    session: Database,
    _admin: Admin,
    pages: Pages,
    install_state: StateFilter = None,
) -> Installs:
    """The install state of one assignment on each device it targets."""
    return installs.assignment_installs(
        session, assignment_id, install_state, pages.limit, pages.offset
    )


@router.get("/devices/{device_id}/installs", response_model=Installs, responses=ERRORS)
def device_installs(
    device_id: DeviceIdPath,
    session: Database,
    _admin: Admin,
    pages: Pages,
    install_state: StateFilter = None,
) -> Installs:
    """The install state of every version assigned to one device."""
    return installs.device_installs(session, device_id, install_state, pages.limit, pages.offset)
