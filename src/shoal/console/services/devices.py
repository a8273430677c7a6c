"""Devices (client installs) as their servers reported them: search, filter, retire."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from shoal.console import db, schemas
from shoal.console.services.paging import page_of
from shoal.console.services.rows import get_row
from shoal.console.state import ConsoleState

log = logging.getLogger("shoal.console")


class DeviceStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


def _outs(
    session: Session, devices: Sequence[db.Device], now: datetime, window: timedelta
) -> list[schemas.DeviceOut]:
    cached: dict[str, list[schemas.CachedContent]] = {device.id: [] for device in devices}
    for entry in session.scalars(
        select(db.DeviceContent).where(db.DeviceContent.device_id.in_(cached))
    ):
        cached[entry.device_id].append(
            schemas.CachedContent(
                content_id=entry.content_id, bytes_done=entry.bytes_done, complete=entry.complete
            )
        )
    return [
        schemas.DeviceOut(
            id=device.id,
            hostname=device.hostname,
            address=device.address,
            subnet=device.subnet,
            office=device.office,
            version=device.version,
            server_id=device.server_id,
            licensed=device.licensed,
            status="online" if now - device.last_seen <= window else "offline",
            first_seen=device.first_seen,
            last_seen=device.last_seen,
            cached_content=cached[device.id],
        )
        for device in devices
    ]


def list_devices(
    state: ConsoleState,
    session: Session,
    limit: int,
    offset: int,
    *,
    office: str | None = None,
    status: DeviceStatus | None = None,
    version: str | None = None,
    search: str | None = None,
) -> schemas.Page[schemas.DeviceOut]:
    """Devices by host name; filtered by office, status, client version, and ``search``
    (part of the host name, device ID or address)."""
    query = select(db.Device).order_by(db.Device.hostname, db.Device.id)
    if office is not None:
        query = query.where(db.Device.office == office)
    if version is not None:
        query = query.where(db.Device.version == version)
    now = state.clock()
    window = timedelta(seconds=state.config.online_window_seconds)
    if status is DeviceStatus.ONLINE:
        query = query.where(db.Device.last_seen >= now - window)
    elif status is DeviceStatus.OFFLINE:
        query = query.where(db.Device.last_seen < now - window)
    if search:
        query = query.where(
            or_(
                db.Device.hostname.icontains(search, autoescape=True),
                db.Device.id.icontains(search, autoescape=True),
                db.Device.address.icontains(search, autoescape=True),
            )
        )
    rows, total = page_of(session, query, limit, offset)
    return schemas.Page(
        items=_outs(session, rows, now, window), total=total, limit=limit, offset=offset
    )


def get_device(state: ConsoleState, session: Session, device_id: str) -> schemas.DeviceOut:
    device = get_row(session, db.Device, device_id, f"device {device_id!r}")
    window = timedelta(seconds=state.config.online_window_seconds)
    (out,) = _outs(session, [device], state.clock(), window)
    return out


def retire_device(state: ConsoleState, session: Session, device_id: str) -> None:
    """Forget a device (uninstalled): frees its licence seat; it never again receives a
    confidential key, even if its server reports it."""
    device = get_row(session, db.Device, device_id, f"device {device_id!r}")
    session.execute(delete(db.DeviceContent).where(db.DeviceContent.device_id == device_id))
    session.delete(device)
    if session.get(db.RetiredDevice, device_id) is None:
        session.add(db.RetiredDevice(device_id=device_id, retired_at=state.clock()))
    session.commit()
    log.info("retired device %s: %s", device_id, state.licence_status(session).message)
