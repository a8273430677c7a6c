"""Install specifications and install results.

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

The listing is one SQL query whatever the size of the site (``_rows``): the devices an
assignment reaches are joined in the database (an office target reaches its office and
every office below it, a recursive common table expression over ``offices``), the state
is derived by a ``CASE`` beside the report and the download progress, and the page is
cut by ``LIMIT``/``OFFSET`` with the total counted by the same query. Uninstalls of
versions no longer assigned follow the assigned rows (``assignment_id`` null).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    case,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Subquery

from shoal import topology
from shoal.console import db, schemas
from shoal.console.services.errors import Invalid
from shoal.console.services.rows import get_row
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind
from shoal.install_spec import InstallSpecInvalid, read_install_spec
from shoal.wire.control_fields import InstallStatus

REPORTED_STATES = tuple(
    state
    for state in schemas.INSTALL_REPORTED_STATES
    if state != InstallStatus.INSTALLING.name.lower()
)
"""States only a device's report gives (the others, "installing" among them, are derived
from download progress)."""
UNINSTALL_STATES = ("uninstalling", "uninstalled", "uninstall_failed")


# --- install specifications -------------------------------------------------------


def validated_spec(raw: Any) -> dict[str, Any]:
    """The specification as stored and signed; ``Invalid`` (422) naming the field."""
    try:
        return read_install_spec(raw).to_json()
    except InstallSpecInvalid as error:
        raise Invalid(str(error)) from None


def spec_from_query(text: str | None) -> dict[str, Any] | None:
    """The ``install`` query parameter of an upload (JSON), validated before any byte
    of the package is read."""
    if text is None:
        return None
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise Invalid(f"install: not JSON ({error})") from None
    return validated_spec(raw)


def set_version_spec(
    state: ConsoleState, session: Session, version: db.ApplicationVersion, spec: Any | None
) -> None:
    """Store (or clear) a version's specification; the servers fetch the re-signed
    document. The caller commits."""
    version.install_spec = spec
    state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)


def set_spec_of_upload(
    state: ConsoleState, uploaded: schemas.VersionOut, spec: dict[str, Any]
) -> schemas.VersionOut:
    """Store the specification given with an upload on the version just registered."""
    with state.sessions() as session:
        version = session.get_one(db.ApplicationVersion, uploaded.id)
        set_version_spec(state, session, version, spec)
        session.commit()
    return uploaded.model_copy(update={"install": spec})


def _version(session: Session, version_id: int) -> db.ApplicationVersion:
    version = get_row(session, db.ApplicationVersion, version_id, f"version {version_id}")
    return version


def _spec_out(session: Session, version: db.ApplicationVersion) -> schemas.InstallSpecOut:
    application = session.get_one(db.Application, version.application_id)
    return schemas.InstallSpecOut(
        version_id=version.id,
        application=application.name,
        version=version.version,
        content_id=version.content_id,
        install=version.install_spec,
    )


def get_spec(session: Session, version_id: int) -> schemas.InstallSpecOut:
    """A version's install specification (``install`` null when it has none)."""
    return _spec_out(session, _version(session, version_id))


def put_spec(
    state: ConsoleState, session: Session, version_id: int, raw: Any
) -> schemas.InstallSpecOut:
    """Set a version's install specification (validated)."""
    version = _version(session, version_id)
    set_version_spec(state, session, version, validated_spec(raw))
    session.commit()
    return _spec_out(session, version)


def delete_spec(state: ConsoleState, session: Session, version_id: int) -> None:
    """Remove a version's install specification (nothing installed is uninstalled)."""
    set_version_spec(state, session, _version(session, version_id), None)
    session.commit()


# --- install reports ----------------------------------------------------------------


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


# --- install results ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstallFilter:
    """What a listing of install results is narrowed to (``None``: any)."""

    assignment_id: int | None = None
    device_id: str | None = None
    state: str | None = None
    application: str | None = None
    device_ids: tuple[str, ...] | None = None
    """Only these devices (a page of them, read in device order beforehand)."""
    uninstalling_only: bool = False
    """Only devices that reported an uninstall (what the withdrawn rows look at)."""


def _targeted(wanted: InstallFilter) -> Subquery:
    """(assignment, device) for every device each assignment reaches now: the device
    itself, every device, or every device of the office and the offices below it."""
    assignment = db.Assignment
    device = db.Device
    narrowed: list[ColumnElement[bool]] = []
    if wanted.assignment_id is not None:
        narrowed.append(assignment.id == wanted.assignment_id)
    office_targets = select(assignment.target.label("root"), assignment.target.label("office"))
    office_targets = office_targets.where(assignment.target_kind == "office", *narrowed)
    reach = office_targets.cte("reach", recursive=True)
    below = aliased(db.OfficeRow)
    # UNION (not ALL) ends the recursion even if a saved tree had a cycle.
    reach = reach.union(
        select(reach.c.root, below.name).join(below, below.parent == reach.c.office)
    )
    device_filter: list[ColumnElement[bool]] = []
    if wanted.device_id is not None:
        device_filter.append(device.id == wanted.device_id)
    if wanted.device_ids is not None:
        device_filter.append(device.id.in_(wanted.device_ids))
    if wanted.uninstalling_only:
        device_filter.append(
            device.id.in_(
                select(db.InstallResult.device_id).where(
                    db.InstallResult.state.in_(UNINSTALL_STATES)
                )
            )
        )
    if wanted.state in REPORTED_STATES:
        # Only a report gives that state: reach only the (few) devices that sent one,
        # rather than every device of every assignment.
        device_filter.append(
            device.id.in_(
                select(db.InstallResult.device_id).where(db.InstallResult.state == wanted.state)
            )
        )
    to_device = (
        select(assignment.id.label("assignment_id"), device.id.label("device_id"))
        .join(device, device.id == assignment.target)
        .where(assignment.target_kind == "device", *narrowed, *device_filter)
    )
    to_everyone = (
        select(assignment.id, device.id)
        .join(device, true())
        .where(assignment.target_kind == "everyone", *narrowed, *device_filter)
    )
    to_office = (
        select(assignment.id, device.id)
        .join(reach, reach.c.root == assignment.target)
        .join(device, device.office == reach.c.office)
        .where(assignment.target_kind == "office", *narrowed, *device_filter)
        .distinct()
    )
    return union_all(to_device, to_everyone, to_office).subquery("targeted")


def _rows(wanted: InstallFilter) -> CompoundSelect[Any] | Select[Any]:
    """Every row of the listing, in order: assigned (newest assignment first, then by
    host name), then uninstalls of versions no longer assigned."""
    targeted = _targeted(wanted)
    version, application = db.ApplicationVersion, db.Application
    report, held = db.InstallResult, db.DeviceContent
    derived = func.coalesce(
        report.state,
        case(
            (or_(held.device_id.is_(None), and_(held.bytes_done == 0, ~held.complete)), "pending"),
            (~held.complete, "downloading"),
            (version.install_spec.is_(None), "downloaded"),
            else_="installing",
        ),
    )
    assigned = (
        select(
            targeted.c.assignment_id.label("assignment_id"),
            targeted.c.device_id.label("device_id"),
            version.id.label("version_id"),
            derived.label("state"),
            literal(0).label("withdrawn"),
        )
        .join(db.Assignment, db.Assignment.id == targeted.c.assignment_id)
        .join(version, version.id == db.Assignment.version_id)
        .join(application, application.id == version.application_id)
        .outerjoin(
            report,
            and_(report.device_id == targeted.c.device_id, report.content_id == version.content_id),
        )
        .outerjoin(
            held,
            and_(held.device_id == targeted.c.device_id, held.content_id == version.content_id),
        )
    )
    if wanted.application is not None:
        assigned = assigned.where(application.name == wanted.application)
    if wanted.state in REPORTED_STATES:
        # Only a report gives it: the planner can start from the (few) reports.
        assigned = assigned.where(report.state == wanted.state)
    elif wanted.state is not None:
        assigned = assigned.where(report.state.is_(None), derived == wanted.state)
    if wanted.assignment_id is not None:
        return assigned
    return union_all(assigned, _withdrawn(wanted, targeted))


def _withdrawn(wanted: InstallFilter, targeted: Subquery) -> Select[Any]:
    """Uninstalls whose assignment is gone: no current assignment of that content
    reaches the device. The version shown is the newest with that content."""
    version, application, report = db.ApplicationVersion, db.Application, db.InstallResult
    still_assigned = (
        select(targeted.c.device_id)
        .join(db.Assignment, db.Assignment.id == targeted.c.assignment_id)
        .join(version, version.id == db.Assignment.version_id)
        .where(targeted.c.device_id == report.device_id, version.content_id == report.content_id)
    )
    newest_version = (
        select(func.max(version.id))
        .where(version.content_id == report.content_id)
        .scalar_subquery()
    )
    withdrawn = select(
        null().label("assignment_id"),
        report.device_id,
        newest_version.label("version_id"),
        report.state,
        literal(1).label("withdrawn"),
    ).where(report.state.in_(UNINSTALL_STATES), ~exists(still_assigned))
    if wanted.device_id is not None:
        withdrawn = withdrawn.where(report.device_id == wanted.device_id)
    if wanted.state is not None:
        withdrawn = withdrawn.where(report.state == wanted.state)
    if wanted.application is not None:
        withdrawn = withdrawn.where(
            exists(
                select(version.id)
                .join(application, application.id == version.application_id)
                .where(
                    version.content_id == report.content_id,
                    application.name == wanted.application,
                )
            )
        )
    return withdrawn


def list_installs(
    session: Session,
    wanted: InstallFilter,
    limit: int,
    offset: int,
    tree: topology.Topology | None = None,
) -> schemas.Page[schemas.InstallResultOut]:
    """One page of install results: a row per (assignment, device it reaches), newest
    assignment first, then the uninstalls of versions no longer assigned.

    Unfiltered and given the office ``tree``, the page is cut assignment by assignment
    (``_page_by_assignment``) instead of by one query over every row of the site."""
    if wanted == InstallFilter() and tree is not None:
        return _page_by_assignment(session, tree, limit, offset)
    rows = _rows(wanted).subquery("installs")
    total = session.scalar(select(func.count()).select_from(rows)) or 0
    page = session.execute(
        select(rows.c.assignment_id, rows.c.device_id, rows.c.version_id, rows.c.state)
        .order_by(
            rows.c.withdrawn, rows.c.assignment_id.desc(), rows.c.device_id, rows.c.version_id
        )
        .limit(limit)
        .offset(offset)
    ).all()
    return schemas.Page(items=_outs(session, page), total=int(total), limit=limit, offset=offset)


@dataclass(frozen=True, slots=True)
class _Reach:
    """An assignment, and the devices it reaches now: which offices (None: every
    device), or one device; and how many."""

    assignment_id: int
    offices: frozenset[str] | None
    device: str | None
    count: int

    def device_page(self, session: Session, limit: int, offset: int) -> tuple[str, ...]:
        """The IDs of the devices reached, in ID order, ``limit`` from ``offset``: an
        index walk (devices by primary key, or by office), never the whole reach."""
        if self.device is not None:
            return (self.device,)[offset : offset + limit]
        query = select(db.Device.id).order_by(db.Device.id).limit(limit).offset(offset)
        if self.offices is not None:
            query = query.where(db.Device.office.in_(self.offices))
        return tuple(session.scalars(query))


def _reached(session: Session, tree: topology.Topology) -> list[_Reach]:
    """Every assignment, newest first, with how many devices it reaches now, from the
    device count per office: no row per device is read."""
    per_office: dict[str | None, int] = {
        office: int(count)
        for office, count in session.execute(
            select(db.Device.office, func.count()).group_by(db.Device.office)
        )
    }
    assignments = session.execute(
        select(db.Assignment.id, db.Assignment.target_kind, db.Assignment.target).order_by(
            db.Assignment.id.desc()
        )
    ).all()
    wanted_devices = {target for _, kind, target in assignments if kind == "device"}
    existing = set(session.scalars(select(db.Device.id).where(db.Device.id.in_(wanted_devices))))
    subtrees: dict[str, frozenset[str]] = {}
    reached = []
    for assignment_id, kind, target in assignments:
        if kind == "device":
            found = target in existing
            reached.append(_Reach(assignment_id, None, target if found else None, int(found)))
        elif kind == "everyone":
            reached.append(_Reach(assignment_id, None, None, sum(per_office.values())))
        else:
            office = target or ""
            if office not in subtrees:
                subtrees[office] = frozenset(tree.subtree(office))
            offices = subtrees[office]
            count = sum(per_office.get(name, 0) for name in offices)
            reached.append(_Reach(assignment_id, offices, None, count))
    return reached


def _page_by_assignment(
    session: Session, tree: topology.Topology, limit: int, offset: int
) -> schemas.Page[schemas.InstallResultOut]:
    """The unfiltered listing, in the same order as ``_rows``: the total is the devices
    each assignment reaches (counted per office) plus the uninstalls, and the page reads
    only the assignments it overlaps, each by its own narrowed query. One query over
    every (assignment, device) pair took ~3 s with 10,000 devices and 200 assignments."""
    reached = _reached(session, tree)
    # Whether an uninstall's version is still assigned to its device is asked only of
    # the devices that reported one: PostgreSQL otherwise built the whole site's
    # (assignment, device) pairs for the anti-join (~0.5 s).
    reaching_uninstalls = _targeted(InstallFilter(uninstalling_only=True))
    withdrawn = _withdrawn(InstallFilter(), reaching_uninstalls).subquery("withdrawn")
    withdrawn_total = int(session.scalar(select(func.count()).select_from(withdrawn)) or 0)
    rows: list[Any] = []
    position = 0
    for reach in reached:
        if len(rows) < limit and position + reach.count > offset and reach.count:
            devices = reach.device_page(session, limit - len(rows), max(0, offset - position))
            narrowed = InstallFilter(assignment_id=reach.assignment_id, device_ids=devices)
            one = _rows(narrowed).subquery("installs")
            rows += session.execute(
                select(
                    one.c.assignment_id, one.c.device_id, one.c.version_id, one.c.state
                ).order_by(one.c.device_id)
            ).all()
        position += reach.count
    if len(rows) < limit and withdrawn_total:
        rows += session.execute(
            select(
                withdrawn.c.assignment_id,
                withdrawn.c.device_id,
                withdrawn.c.version_id,
                withdrawn.c.state,
            )
            .order_by(withdrawn.c.device_id, withdrawn.c.version_id)
            .limit(limit - len(rows))
            .offset(max(0, offset - position))
        ).all()
    return schemas.Page(
        items=_outs(session, rows), total=position + withdrawn_total, limit=limit, offset=offset
    )


def _outs(session: Session, page: Iterable[Any]) -> list[schemas.InstallResultOut]:
    """The page's rows with names, report details: three lookups for the whole page."""
    page = list(page)
    device_ids = {row.device_id for row in page}
    version_ids = {row.version_id for row in page if row.version_id is not None}
    devices = {
        row.id: row
        for row in session.execute(
            select(db.Device.id, db.Device.hostname, db.Device.office).where(
                db.Device.id.in_(device_ids)
            )
        )
    }
    versions = {
        row.id: row
        for row in session.execute(
            select(
                db.ApplicationVersion.id,
                db.ApplicationVersion.version,
                db.ApplicationVersion.content_id,
                db.Application.name,
            )
            .join(db.Application, db.Application.id == db.ApplicationVersion.application_id)
            .where(db.ApplicationVersion.id.in_(version_ids))
        )
    }
    content_ids = {versions[v].content_id for v in version_ids}
    reports = {
        (row.device_id, row.content_id): row
        for row in session.scalars(
            select(db.InstallResult).where(
                db.InstallResult.device_id.in_(device_ids),
                db.InstallResult.content_id.in_(content_ids),
            )
        )
    }
    result = []
    for row in page:
        device = devices.get(row.device_id)
        version = versions.get(row.version_id)
        content_id = version.content_id if version else ""
        report = reports.get((row.device_id, content_id))
        result.append(
            schemas.InstallResultOut(
                assignment_id=row.assignment_id,
                device_id=row.device_id,
                hostname=device.hostname if device else "",
                office=device.office if device else None,
                application=version.name if version else "",
                version=version.version if version else "",
                version_id=row.version_id,
                content_id=content_id,
                state=row.state,
                attempts=report.attempts if report else 0,
                exit_code=report.exit_code if report else None,
                output_tail=report.output_tail if report else "",
                updated_at=report.updated_at if report else None,
            )
        )
    return result


def assignment_installs(
    session: Session, assignment_id: int, install_state: str | None, limit: int, offset: int
) -> schemas.Page[schemas.InstallResultOut]:
    """The install state of one assignment on each device it reaches."""
    get_row(session, db.Assignment, assignment_id, f"assignment {assignment_id}")
    return list_installs(
        session, InstallFilter(assignment_id=assignment_id, state=install_state), limit, offset
    )


def device_installs(
    session: Session, device_id: str, install_state: str | None, limit: int, offset: int
) -> schemas.Page[schemas.InstallResultOut]:
    """The install state of every version assigned to one device."""
    get_row(session, db.Device, device_id, f"device {device_id!r}")
    return list_installs(
        session, InstallFilter(device_id=device_id, state=install_state), limit, offset
    )


def failed_installs(session: Session) -> tuple[int, int]:
    """Failed installs (``failed`` and ``uninstall_failed`` reports) and how many
    devices they are on: what the dashboard shows as needing a person."""
    failures, devices = session.execute(
        select(func.count(), func.count(db.InstallResult.device_id.distinct())).where(
            db.InstallResult.state.in_(("failed", "uninstall_failed"))
        )
    ).one()
    return int(failures), int(devices)
