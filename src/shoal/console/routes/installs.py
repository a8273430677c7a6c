"""Install specifications and install results: ``/api/v1/versions/{id}/install``,
``/api/v1/installs`` (filterable), and per assignment and per device.

Theory of operation
-------------------
An application version may carry an install specification (``shoal.install_spec``),
validated here by the same function the clients use, stored on the version, and
written into every assignment entry of that version in the signed assignment document
(``shoal.console.documents``): setting or clearing it appends ``assignments_changed``
to the change feed, so the servers fetch the newly signed document and nudge their
clients. It can be given at upload (``POST /api/v1/applications?install=JSON``) or
set later (``PUT /api/v1/versions/{id}/install``).

Devices report each install (``INSTALL_REPORT``) to their P2P server, which relays the
newest per content in its client report (``record_reports``). The state of one
assigned version on one device is that report, or, without one, derived from the
download progress the server reported: ``pending`` (nothing held yet),
``downloading``, ``downloaded`` (held whole; the version has no install
specification), or ``installing`` (held whole, the report is on its way).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.console import db, records, schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind
from shoal.install_spec import InstallSpecInvalid, read_install_spec

router = APIRouter(prefix="/api/v1", tags=["installs"])
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
    422: {"model": schemas.Problem},
}
MAX_ROWS = 100_000
VersionId = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]
DeviceId = Annotated[str, Path(min_length=1, max_length=100)]


def validated_spec(raw: Any) -> dict[str, Any]:
    """The specification as stored and signed, or 422 naming the field."""
    try:
        return read_install_spec(raw).to_json()
    except InstallSpecInvalid as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None


def spec_from_query(text: str | None) -> dict[str, Any] | None:
    """The ``install`` query parameter of an upload (JSON), validated before any byte
    of the package is read."""
    if text is None:
        return None
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"install: not JSON ({error})"
        ) from None
    return validated_spec(raw)


def set_spec_of_upload(
    state: ConsoleState, uploaded: schemas.VersionOut, spec: dict[str, Any]
) -> schemas.VersionOut:
    """Store the specification given with an upload on the version just registered."""
    with state.sessions() as session:
        version = session.get_one(db.ApplicationVersion, uploaded.id)
        set_version_spec(state, session, version, spec)
        session.commit()
    return uploaded.model_copy(update={"install": spec})


def set_version_spec(
    state: ConsoleState, session: Session, version: db.ApplicationVersion, spec: Any | None
) -> None:
    """Store (or clear) a version's specification; the servers fetch the re-signed
    document. The caller commits."""
    version.install_spec = spec
    state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)


def _spec_out(session: Session, version: db.ApplicationVersion) -> schemas.InstallSpecOut:
    application = session.get_one(db.Application, version.application_id)
    return schemas.InstallSpecOut(
        version_id=version.id,
        application=application.name,
        version=version.version,
        content_id=version.content_id,
        install=version.install_spec,
    )


def _version(session: Session, version_id: int) -> db.ApplicationVersion:
    version = session.get(db.ApplicationVersion, version_id)
    if version is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"version {version_id} not found")
    return version


@router.get(
    "/versions/{version_id}/install", response_model=schemas.InstallSpecOut, responses=ERRORS
)
def get_install_spec(
    version_id: VersionId, session: Database, _admin: Admin
) -> schemas.InstallSpecOut:
    """A version's install specification (``install`` is null when it has none)."""
    return _spec_out(session, _version(session, version_id))


@router.put(
    "/versions/{version_id}/install", response_model=schemas.InstallSpecOut, responses=ERRORS
)
def put_install_spec(
    version_id: VersionId,
    body: schemas.InstallSpecIn,
    state: Console,
    session: Database,
    _admin: Admin,
) -> schemas.InstallSpecOut:
    """Set a version's install specification: the devices it is assigned to run it once
    they hold the version (a device that already installed it does not run it again)."""
    version = _version(session, version_id)
    set_version_spec(state, session, version, validated_spec(body.model_dump()))
    session.commit()
    return _spec_out(session, version)


@router.delete("/versions/{version_id}/install", status_code=204, responses=ERRORS)
def delete_install_spec(
    version_id: VersionId, state: Console, session: Database, _admin: Admin
) -> None:
    """Remove a version's install specification (nothing installed is uninstalled)."""
    set_version_spec(state, session, _version(session, version_id), None)
    session.commit()


def record_reports(
    session: Session, device_id: str, reported: Iterable[schemas.ClientInstall], now: datetime
) -> None:
    """Keep a device's install reports (from its server's client report): the newest
    per content; a report the server no longer relays (it restarted) is kept."""
    for install in reported:
        row = session.get(db.InstallResult, (device_id, install.content_id))
        if row is None:
            row = db.InstallResult(device_id=device_id, content_id=install.content_id)
            session.add(row)
        elif (row.state, row.attempts, row.exit_code, row.output_tail) == (
            install.state,
            install.attempts,
            install.exit_code,
            install.output_tail,
        ):
            continue
        row.state, row.attempts = install.state, install.attempts
        row.exit_code, row.output_tail, row.updated_at = (
            install.exit_code,
            install.output_tail,
            now,
        )


def install_results(
    session: Session,
    state: ConsoleState,
    *,
    assignment_id: int | None = None,
    device_id: str | None = None,
    wanted_state: str | None = None,
    application: str | None = None,
    limit: int = MAX_ROWS,
) -> list[schemas.InstallResultOut]:
    """One row per (assignment, targeted device), filtered (see the module docstring)."""
    tree = records.load_topology(session, state.topology_cache)
    query = select(db.Assignment).order_by(db.Assignment.id)
    if assignment_id is not None:
        query = query.where(db.Assignment.id == assignment_id)
    rows: list[schemas.InstallResultOut] = []
    for assignment in session.scalars(query):
        version = session.get_one(db.ApplicationVersion, assignment.version_id)
        app = session.get_one(db.Application, version.application_id)
        if application is not None and app.name != application:
            continue
        devices = records.targeted_devices(session, tree, assignment.target_kind, assignment.target)
        if device_id is not None:
            devices = [device for device in devices if device == device_id]
        if not devices:
            continue
        reports = {
            row.device_id: row
            for row in session.scalars(
                select(db.InstallResult).where(
                    db.InstallResult.content_id == version.content_id,
                    db.InstallResult.device_id.in_(devices),
                )
            )
        }
        progress = {
            row.device_id: row
            for row in session.scalars(
                select(db.DeviceContent).where(
                    db.DeviceContent.content_id == version.content_id,
                    db.DeviceContent.device_id.in_(devices),
                )
            )
        }
        known = {
            row.id: row
            for row in session.scalars(select(db.Device).where(db.Device.id.in_(devices)))
        }
        for device in devices:
            report = reports.get(device)
            held = progress.get(device)
            if report is not None:
                derived = report.state
            elif held is None or (held.bytes_done == 0 and not held.complete):
                derived = "pending"
            elif not held.complete:
                derived = "downloading"
            else:
                derived = "downloaded" if version.install_spec is None else "installing"
            if wanted_state is not None and derived != wanted_state:
                continue
            row = known.get(device)
            rows.append(
                schemas.InstallResultOut(
                    assignment_id=assignment.id,
                    device_id=device,
                    hostname=row.hostname if row else "",
                    office=row.office if row else None,
                    application=app.name,
                    version=version.version,
                    version_id=version.id,
                    content_id=version.content_id,
                    state=derived,  # type: ignore[arg-type]
                    attempts=report.attempts if report else 0,
                    exit_code=report.exit_code if report else None,
                    output_tail=report.output_tail if report else "",
                    updated_at=report.updated_at if report else None,
                )
            )
            if len(rows) >= limit:
                return rows
    if assignment_id is None:
        rows += _withdrawn(session, rows, device_id, wanted_state, application)
    return rows[:limit]


UNINSTALL_STATES = ("uninstalling", "uninstalled", "uninstall_failed")


def _withdrawn(
    session: Session,
    shown: list[schemas.InstallResultOut],
    device_id: str | None,
    wanted_state: str | None,
    application: str | None,
) -> list[schemas.InstallResultOut]:
    """Uninstalls: reports for versions no longer assigned to the device (its
    assignment was removed), shown with ``assignment_id`` null."""
    covered = {(row.device_id, row.content_id) for row in shown}
    query = select(db.InstallResult).where(db.InstallResult.state.in_(UNINSTALL_STATES))
    if device_id is not None:
        query = query.where(db.InstallResult.device_id == device_id)
    if wanted_state is not None:
        query = query.where(db.InstallResult.state == wanted_state)
    rows = []
    for report in session.scalars(query.order_by(db.InstallResult.device_id)):
        if (report.device_id, report.content_id) in covered:
            continue
        version = session.scalar(
            select(db.ApplicationVersion).where(
                db.ApplicationVersion.content_id == report.content_id
            )
        )
        app = session.get(db.Application, version.application_id) if version else None
        if application is not None and (app is None or app.name != application):
            continue
        device = session.get(db.Device, report.device_id)
        rows.append(
            schemas.InstallResultOut(
                assignment_id=None,
                device_id=report.device_id,
                hostname=device.hostname if device else "",
                office=device.office if device else None,
                application=app.name if app else "",
                version=version.version if version else "",
                version_id=version.id if version else None,
                content_id=report.content_id,
                state=report.state,  # type: ignore[arg-type]
                attempts=report.attempts,
                exit_code=report.exit_code,
                output_tail=report.output_tail,
                updated_at=report.updated_at,
            )
        )
    return rows


StateFilter = Annotated[
    str | None,
    Query(
        alias="state",
        pattern=r"^[a-z_]{1,20}$",
        description="only this state (pending, downloading, installed, failed, ...)",
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_ROWS)]


@router.get("/installs", response_model=list[schemas.InstallResultOut], responses=ERRORS)
def list_installs(
    state: Console,
    session: Database,
    _admin: Admin,
    assignment: Annotated[int | None, Query(ge=1, le=schemas.MAX_ID)] = None,
    device: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    install_state: StateFilter = None,
    application: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Limit = MAX_ROWS,
) -> list[schemas.InstallResultOut]:
    """Every assigned version on every targeted device, filterable by assignment,
    device, state and application; then the uninstalls of versions no longer assigned
    (``assignment_id`` null)."""
    return install_results(
        session,
        state,
        assignment_id=assignment,
        device_id=device,
        wanted_state=install_state,
        application=application,
        limit=limit,
    )


@router.get(
    "/assignments/{assignment_id}/installs",
    response_model=list[schemas.InstallResultOut],
    responses=ERRORS,
)
def assignment_installs(
    assignment_id: Annotated[int, Path(ge=1, le=schemas.MAX_ID)],
    state: Console,
    session: Database,
    _admin: Admin,
    install_state: StateFilter = None,
) -> list[schemas.InstallResultOut]:
    """The install state of one assignment on each device it targets."""
    if session.get(db.Assignment, assignment_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"assignment {assignment_id} not found")
    return install_results(session, state, assignment_id=assignment_id, wanted_state=install_state)


@router.get(
    "/devices/{device_id}/installs",
    response_model=list[schemas.InstallResultOut],
    responses=ERRORS,
)
def device_installs(
    device_id: DeviceId,
    state: Console,
    session: Database,
    _admin: Admin,
    install_state: StateFilter = None,
) -> list[schemas.InstallResultOut]:
    """The install state of every version assigned to one device."""
    if session.get(db.Device, device_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id!r} not found")
    return install_results(session, state, device_id=device_id, wanted_state=install_state)
