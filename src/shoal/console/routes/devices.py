"""Devices: search and filter, one device, retire."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.routes.common import ERRORS, DeviceIdPath, Pages
from shoal.console.services import devices
from shoal.console.services.devices import DeviceStatus

router = APIRouter(tags=["devices"])


@router.get("/devices", response_model=schemas.Page[schemas.DeviceOut], responses=ERRORS)
def list_devices(
    state: Console,
    session: Database,
    _admin: Admin,
    pages: Pages,
    office: Annotated[schemas.Name | None, Query(description="only this office")] = None,
    status: Annotated[DeviceStatus | None, Query(description="online or offline")] = None,
    version: Annotated[
        schemas.ShortText | None, Query(description="only this client version")
    ] = None,
    search: Annotated[
        str | None, Query(max_length=200, description="part of the host name, ID or address")
    ] = None,
) -> schemas.Page[schemas.DeviceOut]:
    """Devices (client installs) as their servers reported them, by host name."""
    return devices.list_devices(
        state,
        session,
        pages.limit,
        pages.offset,
        office=office,
        status=status,
        version=version,
        search=search,
    )


@router.get("/devices/{device_id}", response_model=schemas.DeviceOut, responses=ERRORS)
def get_device(
    device_id: DeviceIdPath, state: Console, session: Database, _admin: Admin
) -> schemas.DeviceOut:
    """One device: version, office, status, cached content."""
    return devices.get_device(state, session, device_id)


@router.delete("/devices/{device_id}", status_code=204, responses=ERRORS)
def retire_device(
    device_id: DeviceIdPath, state: Console, session: Database, _admin: Admin
) -> None:
    """Forget a device (uninstalled): frees its licence seat."""
    devices.retire_device(state, session, device_id)
