"""The client release: the version of the ``shoal`` application every client should run.

Marking a version (``mark``) checks it against every registered P2P server
(``shoal.release_policy.check_release``: servers are upgraded first; a refusal is a 409
naming the servers and the version to reach), gives it the release's install
specification when it has none (``release_spec``: the client's own ``install-release``),
and assigns it to everyone. The clients then fetch it peer to peer and install it like
any package; the assignment document that carries its specification is the console's
signed one, so nothing else can make a client install a release. Unmarking deletes that
assignment (clients that upgraded stay upgraded). The mark is kept in the settings
table (key ``client_release``): version and assignment IDs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal.console import db, schemas
from shoal.console.services.assignments import create_assignment
from shoal.console.services.errors import Conflict, Invalid
from shoal.console.services.rows import get_row
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind
from shoal.release_policy import (
    CLIENT_APPLICATION,
    ReleaseRefused,
    check_release,
    release_spec,
)
from shoal.versions import InvalidVersion

RELEASE_KEY = "client_release"


class ClientReleaseRequest(schemas.Strict):
    version_id: schemas.RowId
    background: bool = True
    """Fetch in the background (LEDBAT: yields to other WAN traffic), as an upgrade should."""


class ClientReleaseOut(BaseModel):
    version_id: int
    version: str
    content_id: str
    assignment_id: int | None
    install: dict[str, Any] | None
    devices: dict[str, int]
    """Devices by the version they last reported."""


def _devices_by_version(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(db.Device.version, db.Device.id).where(
            db.Device.id.not_in(select(db.RetiredDevice.device_id))
        )
    ).all()
    counts: dict[str, int] = {}
    for version, _ in rows:
        counts[version] = counts.get(version, 0) + 1
    return dict(sorted(counts.items()))


def get(session: Session) -> ClientReleaseOut | None:
    """The marked release and how many devices run each version (None: none marked)."""
    row = session.get(db.Setting, RELEASE_KEY)
    version = None if row is None else session.get(db.ApplicationVersion, row.value["version_id"])
    if row is None or version is None:
        return None
    assignment_id = row.value.get("assignment_id")
    if assignment_id is not None and session.get(db.Assignment, assignment_id) is None:
        assignment_id = None  # deleted by hand: the release is marked but not offered
    return ClientReleaseOut(
        version_id=version.id,
        version=version.version,
        content_id=version.content_id,
        assignment_id=assignment_id,
        install=version.install_spec,
        devices=_devices_by_version(session),
    )


def mark(state: ConsoleState, session: Session, body: ClientReleaseRequest) -> ClientReleaseOut:
    """Mark a version of the ``shoal`` application as the client release (see above)."""
    version = session.get(db.ApplicationVersion, body.version_id)
    if version is None:
        raise Invalid(f"version_id: application version {body.version_id} does not exist")
    application = session.get_one(db.Application, version.application_id)
    if application.name != CLIENT_APPLICATION:
        raise Invalid(
            f"version_id: a version of {application.name!r}; a client release is a version "
            f"of the {CLIENT_APPLICATION!r} application (upload the shoal wheel under it)"
        )
    if application.confidential:
        raise Invalid("version_id: a client release cannot be confidential")
    servers = session.execute(select(db.Server.name, db.Server.version)).all()
    try:
        check_release(version.version, [(name, server_version) for name, server_version in servers])
    except InvalidVersion as error:
        raise Invalid(f"version_id: {error}") from None
    except ReleaseRefused as error:
        raise Conflict(str(error)) from None
    if session.get(db.Setting, RELEASE_KEY) is not None:
        _unmark(state, session)
    if version.install_spec is None:
        version.install_spec = release_spec(version.version)
    assignment = create_assignment(
        state,
        session,
        schemas.AssignmentRequest(
            version_id=version.id,
            target_kind=schemas.TargetKind.EVERYONE,
            target=None,
            background=body.background,
        ),
    )  # commits, and records the change the servers follow
    session.add(
        db.Setting(
            key=RELEASE_KEY, value={"version_id": version.id, "assignment_id": assignment.id}
        )
    )
    session.commit()
    marked = get(session)
    assert marked is not None
    return marked


def _unmark(state: ConsoleState, session: Session) -> None:
    row = get_row(session, db.Setting, RELEASE_KEY, "client release (none is marked)")
    assignment = session.get(db.Assignment, row.value.get("assignment_id"))
    if assignment is not None:
        session.delete(assignment)
        state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)
    session.delete(row)
    session.flush()


def unmark(state: ConsoleState, session: Session) -> None:
    """Stop offering the release (its assignment is deleted; upgraded clients stay)."""
    _unmark(state, session)
    session.commit()
