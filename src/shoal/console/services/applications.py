"""Applications and their versions: register an upload, list, change, delete."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shoal.console import confidential as confidential_records
from shoal.console import db, records, schemas
from shoal.console.content import StoredContent, Upload
from shoal.console.services.errors import Conflict, NotFound
from shoal.console.services.paging import page_of
from shoal.console.services.rows import get_row
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind
from shoal.core.chunking import chunk_size_for
from shoal.core.packing import SealedPackage
from shoal.core.sealing import confidential_chunk_size, new_content_key

log = logging.getLogger("shoal.console")


def check_version_free(state: ConsoleState, name: str, version: str) -> None:
    """``Conflict`` if ``name`` already has ``version`` (checked before the upload)."""
    with state.sessions() as session:
        exists = session.scalar(
            select(db.ApplicationVersion.id)
            .join(db.Application)
            .where(db.Application.name == name, db.ApplicationVersion.version == version)
        )
    if exists:
        raise Conflict(
            f"application {name!r} already has a version {version!r}; delete it first or "
            "use another version label"
        )


def _is_confidential(state: ConsoleState, name: str) -> bool:
    """Is the application already confidential (every later version is encrypted)?"""
    with state.sessions() as session:
        return bool(
            session.scalar(select(db.Application.confidential).where(db.Application.name == name))
        )


def register_upload(
    state: ConsoleState,
    upload: Upload,
    name: str,
    version: str,
    confidential: bool,
    chunk_size: int | None,
) -> schemas.VersionOut:
    """Pack and sign a received upload, publish it and commit its version row.

    Blocking (hashing, encryption, fsync): run it in a worker thread.
    """
    confidential = confidential or _is_confidential(state, name)
    sealed: SealedPackage | None = None
    content_key = b""
    if confidential:
        # The chunks are encrypted while packed: everything the network sees (content
        # ID, manifest, size, hashes) describes the ciphertext.
        content_key = new_content_key()
        manifest_file, sealed = upload.seal_confidential(
            chunk_size or confidential_chunk_size(upload.received),
            state.signing_key,
            content_key,
        )
    else:
        manifest_file = upload.seal(
            chunk_size or chunk_size_for(upload.received), state.signing_key
        )
    # The lock keeps a delete of the same content from removing its file between the
    # rename and the commit.
    with state.content_lock:
        stored: StoredContent = upload.publish(manifest_file)
        manifest = stored.manifest
        with state.sessions() as session:
            now = state.clock()
            application = session.scalar(select(db.Application).where(db.Application.name == name))
            if application is None:
                application = db.Application(name=name, confidential=confidential, created_at=now)
                session.add(application)
                session.flush()
            elif confidential and not application.confidential:
                application.confidential = True
            row = db.ApplicationVersion(
                application_id=application.id,
                version=version,
                content_id=manifest.content_id.hex,
                size=manifest.size,
                sha256=manifest.sha256.hex(),
                chunk_size=manifest.chunk_size,
                chunk_count=manifest.chunk_count,
                created_at=now,
            )
            if sealed is not None:
                row.content_key = confidential_records.wrap(
                    state.content_wrapping_key, content_key, manifest.content_id.hex
                )
                row.plaintext_size = sealed.plaintext_size
                row.plaintext_sha256 = sealed.plaintext_sha256.hex()
            session.add(row)
            state.record_change(session, ChangeKind.CONTENT_ADDED, manifest.content_id.hex)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                raise Conflict(f"application {name!r} already has a version {version!r}") from None
            log.info(
                "uploaded %s %s: %d bytes, content %s%s",
                name,
                version,
                manifest.size,
                manifest.content_id.short,
                " (confidential)" if application.confidential else "",
            )
            return records.version_out(row, application)


def list_applications(
    session: Session, limit: int, offset: int, search: str | None = None
) -> schemas.Page[schemas.ApplicationOut]:
    """Applications by name (``search``: part of the name), each with its versions."""
    query = select(db.Application).order_by(db.Application.name, db.Application.id)
    if search:
        query = query.where(db.Application.name.icontains(search, autoescape=True))
    applications, total = page_of(session, query, limit, offset)
    versions: dict[int, list[db.ApplicationVersion]] = {row.id: [] for row in applications}
    for version in session.scalars(
        select(db.ApplicationVersion)
        .where(db.ApplicationVersion.application_id.in_(versions))
        .order_by(db.ApplicationVersion.id)
    ):
        versions[version.application_id].append(version)
    items = [
        schemas.ApplicationOut(
            id=application.id,
            name=application.name,
            confidential=application.confidential,
            created_at=application.created_at,
            versions=[records.version_out(v, application) for v in versions[application.id]],
        )
        for application in applications
    ]
    return schemas.Page(items=items, total=total, limit=limit, offset=offset)


def list_versions(
    session: Session, limit: int, offset: int, search: str | None = None
) -> schemas.Page[schemas.VersionOut]:
    """Every version of every application, newest first (``search``: part of the
    application's name): what the assign form chooses from."""
    query = (
        select(db.ApplicationVersion)
        .join(db.Application)
        .order_by(db.Application.name, db.ApplicationVersion.id.desc())
    )
    if search:
        query = query.where(db.Application.name.icontains(search, autoescape=True))
    rows, total = page_of(session, query, limit, offset)
    applications = {
        row.id: row
        for row in session.scalars(
            select(db.Application).where(db.Application.id.in_({v.application_id for v in rows}))
        )
    }
    items = [records.version_out(row, applications[row.application_id]) for row in rows]
    return schemas.Page(items=items, total=total, limit=limit, offset=offset)


def get_application(session: Session, application_id: int) -> schemas.ApplicationOut:
    application = get_row(session, db.Application, application_id, f"application {application_id}")
    return records.application_out(session, application)


def set_confidential(
    session: Session, application_id: int, confidential: bool
) -> schemas.ApplicationOut:
    application = get_row(session, db.Application, application_id, f"application {application_id}")
    application.confidential = confidential
    session.commit()
    return records.application_out(session, application)


def _delete_versions(
    state: ConsoleState, session: Session, versions: list[db.ApplicationVersion]
) -> list[str]:
    content_ids = {version.content_id for version in versions}
    for version in versions:
        session.execute(delete(db.Assignment).where(db.Assignment.version_id == version.id))
        session.delete(version)
    session.flush()
    still_used = set(
        session.scalars(
            select(db.ApplicationVersion.content_id).where(
                db.ApplicationVersion.content_id.in_(content_ids)
            )
        )
    )
    gone = sorted(content_ids - still_used)
    for content_id in gone:
        state.record_change(session, ChangeKind.CONTENT_REMOVED, content_id)
    if versions:
        state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)
    return gone


def delete_application(state: ConsoleState, session: Session, application_id: int) -> None:
    """Delete an application, its versions, their assignments and unshared content."""
    with state.content_lock:
        application = get_row(
            session, db.Application, application_id, f"application {application_id}"
        )
        versions = list(
            session.scalars(
                select(db.ApplicationVersion).where(
                    db.ApplicationVersion.application_id == application_id
                )
            )
        )
        gone = _delete_versions(state, session, versions)
        session.delete(application)
        session.commit()
        for content_id in gone:
            state.content.remove(content_id)
    log.info("deleted application %s", application.name)


def _version_of(session: Session, application_id: int, version_id: int) -> db.ApplicationVersion:
    version = session.get(db.ApplicationVersion, version_id)
    if version is None or version.application_id != application_id:
        raise NotFound(f"version {version_id} of application {application_id}")
    return version


def delete_version(
    state: ConsoleState, session: Session, application_id: int, version_id: int
) -> None:
    """Delete one version (and its assignments)."""
    with state.content_lock:
        version = _version_of(session, application_id, version_id)
        gone = _delete_versions(state, session, [version])
        session.commit()
        for content_id in gone:
            state.content.remove(content_id)


def manifest_bytes(
    state: ConsoleState, session: Session, application_id: int, version_id: int
) -> bytes:
    """The signed manifest file of one version (what ``shoal verify`` reads)."""
    version = _version_of(session, application_id, version_id)
    return state.content.manifest_path(version.content_id).read_bytes()
