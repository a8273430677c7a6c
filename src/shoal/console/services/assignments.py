"""Assignments: a version to a device, an office (and below) or everyone; their progress.

Progress is aggregated in SQL from what servers reported (``device_content``) over the
devices an assignment reaches now, so a list of assignments costs a few queries each,
whatever the number of devices.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import Session

from shoal import topology
from shoal.console import db, records, schemas
from shoal.console.services.errors import Invalid, NotFound
from shoal.console.services.paging import page_of
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind


def _reaches(tree: topology.Topology, kind: str, target: str | None) -> ColumnElement[bool]:
    """Which devices an assignment reaches, as a condition on ``devices``."""
    if kind == schemas.TargetKind.DEVICE:
        return db.Device.id == target
    if kind == schemas.TargetKind.OFFICE:
        return db.Device.office.in_(tree.subtree(target or ""))
    return true()


def _percent(bytes_done: int, bytes_total: int, targeted: int, complete: int) -> float:
    if bytes_total:
        return round(100.0 * bytes_done / bytes_total, 2)
    return 100.0 if targeted and complete == targeted else 0.0


def _progress_rows(
    session: Session, reaches: ColumnElement[bool], content_id: str, by_office: bool
) -> list[tuple[Any, int, int, int]]:
    """(office or None, devices targeted, devices complete, bytes done).

    Two aggregates: the devices reached (by the office index), and what those devices
    hold of this content (by the content index): neither reads every device's content.
    """
    keys: list[Any] = [db.Device.office] if by_office else []
    targeted_query = select(*keys, func.count()).select_from(db.Device).where(reaches)
    done_query = (
        select(
            *keys,
            func.count().filter(db.DeviceContent.complete.is_(True)),
            func.coalesce(func.sum(db.DeviceContent.bytes_done), 0),
        )
        .select_from(db.DeviceContent)
        .join(db.Device, db.Device.id == db.DeviceContent.device_id)
        .where(db.DeviceContent.content_id == content_id, reaches)
    )
    if by_office:
        targeted_query = targeted_query.group_by(db.Device.office)
        done_query = done_query.group_by(db.Device.office)
    done = {
        (row[0] if by_office else None): (int(row[-2]), int(row[-1]))
        for row in session.execute(done_query)
    }
    rows = []
    for row in session.execute(targeted_query):
        office = row[0] if by_office else None
        complete, bytes_done = done.get(office, (0, 0))
        rows.append((office, int(row[-1]), complete, bytes_done))
    return sorted(rows, key=lambda row: (row[0] is None, row[0] or ""))


def _out(
    session: Session,
    assignment: db.Assignment,
    version: db.ApplicationVersion,
    application: db.Application,
    tree: topology.Topology,
    hostnames: dict[str, str],
    by_office: bool = False,
) -> schemas.AssignmentOut:
    reaches = _reaches(tree, assignment.target_kind, assignment.target)
    ((_, targeted, complete, bytes_done),) = _progress_rows(
        session, reaches, version.content_id, False
    )
    bytes_total = version.size * targeted
    bytes_done = min(bytes_done, bytes_total)
    offices = None
    if by_office:
        offices = []
        for office, office_targeted, office_complete, office_done in _progress_rows(
            session, reaches, version.content_id, True
        ):
            office_total = version.size * office_targeted
            office_done = min(office_done, office_total)
            offices.append(
                schemas.OfficeProgress(
                    office=office,
                    devices_targeted=office_targeted,
                    devices_complete=office_complete,
                    bytes_done=office_done,
                    bytes_total=office_total,
                    percent=_percent(office_done, office_total, office_targeted, office_complete),
                )
            )
    if assignment.target_kind == schemas.TargetKind.DEVICE:
        label = hostnames.get(assignment.target or "", assignment.target or "")
    else:
        label = assignment.target or "everyone"
    return schemas.AssignmentOut(
        id=assignment.id,
        version_id=version.id,
        application=application.name,
        version=version.version,
        content_id=version.content_id,
        target_kind=assignment.target_kind,
        target=assignment.target,
        target_label=label,
        background=assignment.background,
        created_at=assignment.created_at,
        progress=schemas.Progress(
            devices_targeted=targeted,
            devices_complete=complete,
            bytes_done=bytes_done,
            bytes_total=bytes_total,
            percent=_percent(bytes_done, bytes_total, targeted, complete),
        ),
        offices=offices,
    )


def _outs(
    state: ConsoleState, session: Session, assignments: list[db.Assignment], by_office: bool
) -> list[schemas.AssignmentOut]:
    tree = records.load_topology(session, state.topology_cache)
    versions = {
        row.id: row
        for row in session.scalars(
            select(db.ApplicationVersion).where(
                db.ApplicationVersion.id.in_({a.version_id for a in assignments})
            )
        )
    }
    applications = {
        row.id: row
        for row in session.scalars(
            select(db.Application).where(
                db.Application.id.in_({v.application_id for v in versions.values()})
            )
        )
    }
    device_targets = {
        a.target for a in assignments if a.target_kind == schemas.TargetKind.DEVICE and a.target
    }
    hostnames: dict[str, str] = dict(
        session.execute(
            select(db.Device.id, db.Device.hostname).where(db.Device.id.in_(device_targets))
        ).all()
    )
    return [
        _out(
            session,
            assignment,
            versions[assignment.version_id],
            applications[versions[assignment.version_id].application_id],
            tree,
            hostnames,
            by_office,
        )
        for assignment in assignments
    ]


def create_assignment(
    state: ConsoleState, session: Session, body: schemas.AssignmentRequest
) -> schemas.AssignmentOut:
    """Assign a version to a device, an office (and below) or everyone."""
    if session.get(db.ApplicationVersion, body.version_id) is None:
        raise Invalid(f"version_id: application version {body.version_id} does not exist")
    tree = records.load_topology(session, state.topology_cache)
    if body.target_kind == schemas.TargetKind.EVERYONE:
        if body.target is not None:
            raise Invalid("target: must be empty when target_kind is 'everyone'")
    elif body.target is None:
        raise Invalid(f"target: name the {body.target_kind.value} to assign to")
    elif body.target_kind == schemas.TargetKind.OFFICE and tree.get(body.target) is None:
        raise Invalid(f"target: no office named {body.target!r}")
    elif body.target_kind == schemas.TargetKind.DEVICE and not session.get(db.Device, body.target):
        raise Invalid(f"target: no device with ID {body.target!r}")
    assignment = db.Assignment(
        version_id=body.version_id,
        target_kind=body.target_kind.value,
        target=body.target,
        background=body.background,
        created_at=state.clock(),
    )
    session.add(assignment)
    state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)
    session.commit()
    (out,) = _outs(state, session, [assignment], by_office=False)
    return out


def list_assignments(
    state: ConsoleState, session: Session, limit: int, offset: int, version_id: int | None = None
) -> schemas.Page[schemas.AssignmentOut]:
    """Assignments, newest first, with progress (``version_id``: of that version only)."""
    query = select(db.Assignment).order_by(db.Assignment.id.desc())
    if version_id is not None:
        query = query.where(db.Assignment.version_id == version_id)
    rows, total = page_of(session, query, limit, offset)
    return schemas.Page(
        items=_outs(state, session, list(rows), by_office=False),
        total=total,
        limit=limit,
        offset=offset,
    )


def get_assignment(
    state: ConsoleState, session: Session, assignment_id: int
) -> schemas.AssignmentOut:
    """One assignment with its progress, overall and per office."""
    assignment = session.get(db.Assignment, assignment_id)
    if assignment is None:
        raise NotFound(f"assignment {assignment_id}")
    (out,) = _outs(state, session, [assignment], by_office=True)
    return out


def delete_assignment(state: ConsoleState, session: Session, assignment_id: int) -> None:
    """Withdraw an assignment (clients keep what they cached)."""
    assignment = session.get(db.Assignment, assignment_id)
    if assignment is None:
        raise NotFound(f"assignment {assignment_id}")
    session.delete(assignment)
    state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)
    session.commit()
