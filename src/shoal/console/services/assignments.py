"""Assignments: a version to a device, an office (and below) or everyone; their progress.

Progress is aggregated from what servers reported (``device_content``) over the devices
an assignment reaches now: a page of assignments costs the same few grouped queries
whatever its length and the number of devices (``_Census``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shoal import topology
from shoal.console import db, records, schemas
from shoal.console.services.errors import Invalid
from shoal.console.services.paging import page_of
from shoal.console.services.rows import get_row
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind


def _percent(bytes_done: int, bytes_total: int, targeted: int, complete: int) -> float:
    if bytes_total:
        return round(100.0 * bytes_done / bytes_total, 2)
    return 100.0 if targeted and complete == targeted else 0.0


@dataclass(slots=True)
class _Tally:
    """Devices reached and what they hold of one content, in one office (or overall)."""

    targeted: int = 0
    complete: int = 0
    bytes_done: int = 0

    def add(self, other: _Tally) -> None:
        self.targeted += other.targeted
        self.complete += other.complete
        self.bytes_done += other.bytes_done


@dataclass(slots=True)
class _Census:
    """What a page of assignments needs, read in three grouped queries whatever its
    length: devices per office, and per (content, office) the devices that completed it
    and the bytes they hold; device targets are read one by one (few)."""

    devices_per_office: dict[str | None, int]
    held: dict[tuple[str, str | None], _Tally]
    device_office: dict[str, str | None]
    device_held: dict[tuple[str, str], _Tally]
    by_content: dict[str, _Tally] | None = None
    subtrees: dict[str | None, set[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, session: Session, content_ids: set[str], device_targets: set[str]) -> _Census:
        devices_per_office: dict[str | None, int] = {
            office: int(count)
            for office, count in session.execute(
                select(db.Device.office, func.count()).group_by(db.Device.office)
            )
        }
        held = {
            (content_id, office): _Tally(0, int(complete), int(bytes_done))
            for content_id, office, complete, bytes_done in session.execute(
                select(
                    db.DeviceContent.content_id,
                    db.Device.office,
                    func.count().filter(db.DeviceContent.complete.is_(True)),
                    func.coalesce(func.sum(db.DeviceContent.bytes_done), 0),
                )
                .join(db.Device, db.Device.id == db.DeviceContent.device_id)
                .where(db.DeviceContent.content_id.in_(content_ids))
                .group_by(db.DeviceContent.content_id, db.Device.office)
                # Without planner statistics (the console keeps none) SQLite looks each
                # device up by its primary key and then reads its row; the covering
                # index gives the office in one search (migration 0009).
                .with_hint(db.Device, "INDEXED BY ix_devices_id_office", "sqlite")
            )
        }
        device_office = {
            device_id: office
            for device_id, office in session.execute(
                select(db.Device.id, db.Device.office).where(db.Device.id.in_(device_targets))
            )
        }
        device_held = {
            (device_id, content_id): _Tally(0, int(complete), int(bytes_done))
            for device_id, content_id, complete, bytes_done in session.execute(
                select(
                    db.DeviceContent.device_id,
                    db.DeviceContent.content_id,
                    db.DeviceContent.complete,
                    db.DeviceContent.bytes_done,
                ).where(db.DeviceContent.device_id.in_(device_targets))
            )
        }
        return cls(devices_per_office, held, device_office, device_held)

    def per_office(
        self, tree: topology.Topology, kind: str, target: str | None, content_id: str
    ) -> dict[str | None, _Tally]:
        """What the assignment reaches now, office by office."""
        if kind == schemas.TargetKind.DEVICE:
            if target not in self.device_office:
                return {}
            tally = _Tally(1)
            tally.add(self.device_held.get((target, content_id), _Tally()))
            return {self.device_office[target]: tally}
        result = {}
        for office in self._offices(tree, kind, target):
            targeted = self.devices_per_office.get(office, 0)
            if not targeted:
                continue
            tally = _Tally(targeted)
            tally.add(self.held.get((content_id, office), _Tally()))
            result[office] = tally
        return result

    def overall(
        self, tree: topology.Topology, kind: str, target: str | None, content_id: str
    ) -> dict[str | None, _Tally]:
        """What the assignment reaches now, as one sum (a list needs no per-office
        detail): for everyone, the per-content totals; no tally per office."""
        if kind == schemas.TargetKind.DEVICE:
            return self.per_office(tree, kind, target, content_id)
        if kind == schemas.TargetKind.EVERYONE:
            tally = _Tally(sum(self.devices_per_office.values()))
            tally.add(self._content_totals().get(content_id, _Tally()))
            return {None: tally}
        tally = _Tally()
        for office in self._offices(tree, kind, target):
            tally.targeted += self.devices_per_office.get(office, 0)
            held = self.held.get((content_id, office))
            if held is not None:
                tally.add(held)
        return {None: tally}

    def _offices(
        self, tree: topology.Topology, kind: str, target: str | None
    ) -> Iterable[str | None]:
        if kind == schemas.TargetKind.OFFICE:
            # Many assignments of a page share a target (a region): walk the tree once.
            if target not in self.subtrees:
                self.subtrees[target] = tree.subtree(target or "")
            return self.subtrees[target]
        return self.devices_per_office

    def _content_totals(self) -> dict[str, _Tally]:
        if self.by_content is None:
            self.by_content = {}
            for (content_id, _office), held in self.held.items():
                self.by_content.setdefault(content_id, _Tally()).add(held)
        return self.by_content


def _progress(tally: _Tally, size: int) -> tuple[int, int, float]:
    bytes_total = size * tally.targeted
    bytes_done = min(tally.bytes_done, bytes_total)
    return (
        bytes_done,
        bytes_total,
        _percent(bytes_done, bytes_total, tally.targeted, tally.complete),
    )


def _out(
    assignment: db.Assignment,
    version: db.ApplicationVersion,
    application: db.Application,
    offices: dict[str | None, _Tally],
    hostnames: dict[str, str],
    by_office: bool,
) -> schemas.AssignmentOut:
    overall = _Tally()
    for tally in offices.values():
        overall.add(tally)
    bytes_done, bytes_total, percent = _progress(overall, version.size)
    office_progress = None
    if by_office:
        office_progress = []
        for office in sorted(offices, key=lambda name: (name is None, name or "")):
            tally = offices[office]
            office_done, office_total, office_percent = _progress(tally, version.size)
            office_progress.append(
                schemas.OfficeProgress(
                    office=office,
                    devices_targeted=tally.targeted,
                    devices_complete=tally.complete,
                    bytes_done=office_done,
                    bytes_total=office_total,
                    percent=office_percent,
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
            devices_targeted=overall.targeted,
            devices_complete=overall.complete,
            bytes_done=bytes_done,
            bytes_total=bytes_total,
            percent=percent,
        ),
        offices=office_progress,
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
    census = _Census.read(session, {v.content_id for v in versions.values()}, device_targets)
    result = []
    for assignment in assignments:
        version = versions[assignment.version_id]
        tally = census.per_office if by_office else census.overall
        offices = tally(tree, assignment.target_kind, assignment.target, version.content_id)
        application = applications[version.application_id]
        result.append(_out(assignment, version, application, offices, hostnames, by_office))
    return result


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
    assignment = get_row(session, db.Assignment, assignment_id, f"assignment {assignment_id}")
    (out,) = _outs(state, session, [assignment], by_office=True)
    return out


def delete_assignment(state: ConsoleState, session: Session, assignment_id: int) -> None:
    """Withdraw an assignment (clients keep what they cached)."""
    assignment = get_row(session, db.Assignment, assignment_id, f"assignment {assignment_id}")
    session.delete(assignment)
    state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)
    session.commit()
