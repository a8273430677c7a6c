"""The administrators' REST API under ``/api/v1``."""

from __future__ import annotations

import errno
import json
import logging
from datetime import timedelta
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import ClientDisconnect

from shoal import __version__, topology
from shoal.console import confidential as confidential_records
from shoal.console import db, records, schemas
from shoal.console.auth import SESSION_COOKIE, Admin, Console, Database
from shoal.console.content import StoredContent, Upload
from shoal.console.enrollment_bundle import build_bundle
from shoal.console.routes import installs
from shoal.console.security import (
    certificate_fingerprint,
    hash_password,
    new_token,
    password_matches,
    token_digest,
)
from shoal.console.state import ConsoleState
from shoal.core.chunking import ALLOWED_CHUNK_SIZES, chunk_size_for
from shoal.core.packing import SealedPackage
from shoal.core.sealing import confidential_chunk_size, new_content_key
from shoal.licensing import LicenceError, read_licence

log = logging.getLogger("shoal.console")

router = APIRouter(prefix="/api/v1")
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": schemas.Problem},
    401: {"model": schemas.Problem},
    403: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
    409: {"model": schemas.Problem},
    422: {"model": schemas.Problem},
}
UPLOAD_ERRORS: dict[int | str, dict[str, object]] = {
    **ERRORS,
    413: {"model": schemas.Problem},
    507: {"model": schemas.Problem},
}
UPLOAD_WRITE_BLOCK = 1 << 20
MAX_TOPOLOGY_BYTES = 16 << 20
"""Largest topology file accepted: ample for ``topology.MAX_OFFICES`` offices."""

ApplicationId = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]
VersionId = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]
RowIdPath = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


# --- health, status -------------------------------------------------------------------


@router.get("/status", response_model=schemas.StatusOut, responses=ERRORS, tags=["status"])
def console_status(state: Console, session: Database, _admin: Admin) -> schemas.StatusOut:
    """Version, signing key, TLS fingerprint, licence (with any overage) and counts."""
    licence = state.licence_status(session)

    def count(model: type[db.Base]) -> int:
        return session.scalar(select(func.count()).select_from(model)) or 0

    return schemas.StatusOut(
        version=__version__,
        console_key_id=state.signing_key.verify_key.key_id.hex(),
        tls_fingerprint=certificate_fingerprint(state.cert_path) if state.cert_path else None,
        licence=schemas.LicenceOut(**licence.as_dict()),  # type: ignore[arg-type]
        applications=count(db.Application),
        devices=count(db.Device),
        servers=count(db.Server),
    )


# --- authentication -------------------------------------------------------------------


def _throttled(wait: int) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"too many failed logins for this user name or from this address: try again in "
        f"{wait} second{'s' if wait != 1 else ''}",
        headers={"Retry-After": str(wait)},
    )


def _check_password(
    request: Request, state: ConsoleState, username: str, password_hash: str | None, password: str
) -> bool:
    """Check a password under the login throttle: 429 while the user name or the
    source address is blocked; an unknown user (no hash) costs the same time."""
    source = request.client.host if request.client else "unknown"
    user_key, source_key = state.login_throttle.keys_for(username, source)
    now = state.clock().timestamp()
    wait = state.login_throttle.attempt((user_key, source_key), now)
    if wait:
        raise _throttled(wait)
    if password_matches(password_hash, password):
        state.login_throttle.succeeded(user_key, source_key)
        return True
    failures = state.login_throttle.failures(user_key)
    (log.warning if failures <= state.config.login_failures else log.info)(
        "failed login for %r from %s (%d in a row for this user name)", username, source, failures
    )
    return False


@router.post(
    "/auth/login",
    response_model=schemas.AdminOut,
    responses={**ERRORS, 429: {"model": schemas.Problem}},
    tags=["auth"],
)
def login(
    body: schemas.LoginRequest,
    request: Request,
    response: Response,
    state: Console,
    session: Database,
) -> schemas.AdminOut:
    """Check a username and password; set the session cookie for the browser.

    Throttled per user name and per source address: after a few failures each further
    attempt waits twice as long (429 with ``Retry-After``).
    """
    admin = session.scalar(select(db.Admin).where(db.Admin.username == body.username))
    password_hash = admin.password_hash if admin is not None else None
    if not _check_password(request, state, body.username, password_hash, body.password):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    assert admin is not None
    token = new_token()
    now = state.clock()
    session.add(
        db.LoginSession(
            token_hash=token_digest(token),
            admin_id=admin.id,
            created_at=now,
            expires_at=now + timedelta(hours=state.config.session_hours),
        )
    )
    session.commit()
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=state.config.session_hours * 3600,
        httponly=True,
        secure=state.config.tls,
        samesite="strict",
        path="/",
    )
    return schemas.AdminOut(username=admin.username, authenticated_by="password")


@router.post("/auth/logout", status_code=204, responses=ERRORS, tags=["auth"])
def logout(request: Request, response: Response, session: Database, _admin: Admin) -> None:
    """End the browser session."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        session.execute(
            delete(db.LoginSession).where(db.LoginSession.token_hash == token_digest(cookie))
        )
        session.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/auth/me", response_model=schemas.AdminOut, responses=ERRORS, tags=["auth"])
def me(admin: Admin) -> schemas.AdminOut:
    """Who is calling, and how they authenticated (session or token)."""
    return schemas.AdminOut(username=admin.username, authenticated_by=admin.authenticated_by)


@router.post(
    "/auth/password",
    status_code=204,
    responses={**ERRORS, 429: {"model": schemas.Problem}},
    tags=["auth"],
)
def change_password(
    body: schemas.PasswordChange, request: Request, state: Console, session: Database, admin: Admin
) -> None:
    """Change the caller's password (at least 12 characters); throttled like the login."""
    row = session.get_one(db.Admin, admin.admin_id)
    if not _check_password(request, state, row.username, row.password_hash, body.current_password):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "current password is wrong")
    row.password_hash = hash_password(body.new_password)
    session.commit()


@router.get("/admins", response_model=list[schemas.AdminListed], responses=ERRORS, tags=["auth"])
def list_admins(session: Database, _admin: Admin) -> list[schemas.AdminListed]:
    """Every administrator."""
    return [
        schemas.AdminListed(id=row.id, username=row.username, created_at=row.created_at)
        for row in session.scalars(select(db.Admin).order_by(db.Admin.id))
    ]


@router.post(
    "/admins", status_code=201, response_model=schemas.AdminListed, responses=ERRORS, tags=["auth"]
)
def add_admin(
    body: schemas.NewAdmin, state: Console, session: Database, _admin: Admin
) -> schemas.AdminListed:
    """Add an administrator."""
    if session.scalar(select(db.Admin).where(db.Admin.username == body.username)):
        raise HTTPException(status.HTTP_409_CONFLICT, f"administrator {body.username!r} exists")
    row = db.Admin(
        username=body.username, password_hash=hash_password(body.password), created_at=state.clock()
    )
    session.add(row)
    session.commit()
    return schemas.AdminListed(id=row.id, username=row.username, created_at=row.created_at)


@router.post(
    "/tokens", status_code=201, response_model=schemas.TokenCreated, responses=ERRORS, tags=["auth"]
)
def create_token(
    body: schemas.TokenRequest, state: Console, session: Database, admin: Admin
) -> schemas.TokenCreated:
    """Create an API token for scripts; the token is shown in this answer only."""
    token = new_token("shoal_")
    row = db.ApiToken(
        name=body.name,
        token_hash=token_digest(token),
        admin_id=admin.admin_id,
        created_at=state.clock(),
    )
    session.add(row)
    session.commit()
    return schemas.TokenCreated(
        id=row.id, name=row.name, created_at=row.created_at, last_used_at=None, token=token
    )


@router.get("/tokens", response_model=list[schemas.TokenOut], responses=ERRORS, tags=["auth"])
def list_tokens(session: Database, admin: Admin) -> list[schemas.TokenOut]:
    """The caller's API tokens (never the tokens themselves)."""
    rows = session.scalars(select(db.ApiToken).where(db.ApiToken.admin_id == admin.admin_id))
    return [
        schemas.TokenOut(
            id=row.id, name=row.name, created_at=row.created_at, last_used_at=row.last_used_at
        )
        for row in rows
    ]


@router.delete("/tokens/{token_id}", status_code=204, responses=ERRORS, tags=["auth"])
def revoke_token(token_id: RowIdPath, session: Database, admin: Admin) -> None:
    """Revoke one of the caller's API tokens."""
    row = session.get(db.ApiToken, token_id)
    if row is None or row.admin_id != admin.admin_id:
        raise _not_found(f"API token {token_id}")
    session.delete(row)
    session.commit()


# --- licence --------------------------------------------------------------------------


@router.get("/license", response_model=schemas.LicenceOut, responses=ERRORS, tags=["licence"])
def get_licence(state: Console, session: Database, _admin: Admin) -> schemas.LicenceOut:
    """The licence: seats, seats used, seats over (overage), expiry, and what it means."""
    return schemas.LicenceOut(**state.licence_status(session).as_dict())  # type: ignore[arg-type]


@router.put("/license", response_model=schemas.LicenceOut, responses=ERRORS, tags=["licence"])
def save_licence(
    body: schemas.LicenceSave, state: Console, session: Database, _admin: Admin
) -> schemas.LicenceOut:
    """Save a licence key: this activates the console and its P2P servers."""
    try:
        read_licence(body.key, state.vendor_key)
    except LicenceError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    row = session.get(db.LicenceKey, 1)
    if row is None:
        session.add(db.LicenceKey(id=1, key_text=body.key.strip(), saved_at=state.clock()))
    else:
        row.key_text, row.saved_at = body.key.strip(), state.clock()
    state.record_change(session, "licence_changed")
    session.flush()
    licence = state.licence_status(session)
    if licence.active:
        now = state.clock()
        for server in session.scalars(select(db.Server).where(db.Server.activated_at.is_(None))):
            server.activated_at = now
    session.commit()
    (log.warning if licence.seats_over or not licence.active else log.info)(
        "licence saved: %s", licence.message
    )
    return schemas.LicenceOut(**licence.as_dict())  # type: ignore[arg-type]


# --- applications ---------------------------------------------------------------------

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/applications",
    status_code=201,
    response_model=schemas.VersionOut,
    responses=UPLOAD_ERRORS,
    openapi_extra=UPLOAD_BODY,
    tags=["applications"],
)
async def upload_application(
    request: Request,
    state: Console,
    _admin: Admin,
    name: Annotated[schemas.Name, Query(description="application name (created if new)")],
    version: Annotated[schemas.ShortText, Query(description="version label, e.g. 1.2.0")],
    confidential: Annotated[bool, Query()] = False,
    chunk_size: Annotated[
        int | None,
        Query(
            description="power of two, 65536..16777216; default 1 MiB, larger for packages "
            "over 8 GiB (at most 8192 chunks)",
            ge=65536,
            le=16777216,
        ),
    ] = None,
    install: Annotated[
        str | None,
        Query(description="install specification (JSON): see PUT /versions/{id}/install"),
    ] = None,
) -> schemas.VersionOut:
    """Upload one version of an application as the raw request body (streamed to disk).

    The answer comes once the package is on disk (fsynced), packed, its manifest signed
    and its row committed; before that no one sees the version.
    """
    if chunk_size is not None and chunk_size not in ALLOWED_CHUNK_SIZES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"chunk_size {chunk_size} is not a power of two from 65536 to 16777216",
        )
    install_spec = installs.spec_from_query(install)
    limit = state.config.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        if int(declared) > limit:
            raise _upload_too_large(limit)
        free = await anyio.to_thread.run_sync(state.content.free_bytes)
        if int(declared) > free:
            raise _disk_full(state, name, version, 0)
    await anyio.to_thread.run_sync(_check_version_free, state, name, version)
    received = 0
    upload: Upload | None = None
    try:
        upload = await anyio.to_thread.run_sync(state.content.begin_upload)
        pending = bytearray()
        async for piece in request.stream():
            received += len(piece)
            if received > limit:
                raise _upload_too_large(limit)
            pending += piece
            if len(pending) >= UPLOAD_WRITE_BLOCK:
                block, pending = bytes(pending), bytearray()
                await anyio.to_thread.run_sync(upload.write, block)
        if pending:
            await anyio.to_thread.run_sync(upload.write, bytes(pending))
        uploaded = await anyio.to_thread.run_sync(
            _register_upload, state, upload, name, version, confidential, chunk_size
        )
        if install_spec is not None:
            uploaded = await anyio.to_thread.run_sync(
                installs.set_spec_of_upload, state, uploaded, install_spec
            )
        return uploaded
    except ClientDisconnect:
        log.info("upload of %s %s abandoned by the client", name, version)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "upload interrupted") from None
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        raise _disk_full(state, name, version, received) from None
    finally:
        if upload is not None:
            upload.discard()


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _upload_too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the upload is larger than this console accepts ({limit} bytes, "
        f"{limit / (1 << 30):.1f} GiB): raise the limit with 'shoal console --max-upload SIZE'",
    )


def _disk_full(state: ConsoleState, name: str, version: str, received: int) -> HTTPException:
    free = state.content.free_bytes()
    log.error(
        "upload of %s %s refused: the disk of %s is full (%d bytes received, %d bytes free)",
        name,
        version,
        state.content.root,
        received,
        free,
    )
    return HTTPException(
        status.HTTP_507_INSUFFICIENT_STORAGE,
        f"the console's disk is full: the upload of {name} {version} was stopped"
        f"{f' after {received} bytes' if received else ''} and removed; {free} bytes are free "
        "where the console keeps packages: free some space (or delete unused versions) and "
        "upload again",
    )


def _check_version_free(state: ConsoleState, name: str, version: str) -> None:
    with state.sessions() as session:
        exists = session.scalar(
            select(db.ApplicationVersion.id)
            .join(db.Application)
            .where(db.Application.name == name, db.ApplicationVersion.version == version)
        )
    if exists:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"application {name!r} already has a version {version!r}; delete it first or "
            "use another version label",
        )


def _is_confidential(state: ConsoleState, name: str) -> bool:
    """Is the application already confidential (every later version is encrypted)?"""
    with state.sessions() as session:
        return bool(
            session.scalar(select(db.Application.confidential).where(db.Application.name == name))
        )


def _register_upload(
    state: ConsoleState,
    upload: Upload,
    name: str,
    version: str,
    confidential: bool,
    chunk_size: int | None,
) -> schemas.VersionOut:
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
            state.record_change(session, "content_added", manifest.content_id.hex)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    f"application {name!r} already has a version {version!r}",
                ) from None
            log.info(
                "uploaded %s %s: %d bytes, content %s%s",
                name,
                version,
                manifest.size,
                manifest.content_id.short,
                " (confidential)" if application.confidential else "",
            )
            return records.version_out(row, application)


@router.get(
    "/applications",
    response_model=list[schemas.ApplicationOut],
    responses=ERRORS,
    tags=["applications"],
)
def list_applications(session: Database, _admin: Admin) -> list[schemas.ApplicationOut]:
    """Every application with its versions."""
    return [
        records.application_out(session, application)
        for application in session.scalars(select(db.Application).order_by(db.Application.id))
    ]


@router.get(
    "/applications/{application_id}",
    response_model=schemas.ApplicationOut,
    responses=ERRORS,
    tags=["applications"],
)
def get_application(
    application_id: ApplicationId, session: Database, _admin: Admin
) -> schemas.ApplicationOut:
    """One application with its versions."""
    application = session.get(db.Application, application_id)
    if application is None:
        raise _not_found(f"application {application_id}")
    return records.application_out(session, application)


@router.patch(
    "/applications/{application_id}",
    response_model=schemas.ApplicationOut,
    responses=ERRORS,
    tags=["applications"],
)
def change_application(
    application_id: ApplicationId,
    body: schemas.ApplicationChange,
    session: Database,
    _admin: Admin,
) -> schemas.ApplicationOut:
    """Set or clear the confidential flag: versions uploaded from then on are encrypted
    (or not); versions already uploaded stay as they were packed."""
    application = session.get(db.Application, application_id)
    if application is None:
        raise _not_found(f"application {application_id}")
    application.confidential = body.confidential
    session.commit()
    return records.application_out(session, application)


def _delete_versions(
    state: ConsoleState, session: Database, versions: list[db.ApplicationVersion]
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
        state.record_change(session, "content_removed", content_id)
    if versions:
        state.record_change(session, "assignments_changed")
    return gone


@router.delete(
    "/applications/{application_id}", status_code=204, responses=ERRORS, tags=["applications"]
)
def delete_application(
    application_id: ApplicationId, state: Console, session: Database, _admin: Admin
) -> None:
    """Delete an application, its versions, their assignments and unshared content."""
    with state.content_lock:
        application = session.get(db.Application, application_id)
        if application is None:
            raise _not_found(f"application {application_id}")
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


@router.delete(
    "/applications/{application_id}/versions/{version_id}",
    status_code=204,
    responses=ERRORS,
    tags=["applications"],
)
def delete_version(
    application_id: ApplicationId,
    version_id: VersionId,
    state: Console,
    session: Database,
    _admin: Admin,
) -> None:
    """Delete one version (and its assignments)."""
    with state.content_lock:
        version = session.get(db.ApplicationVersion, version_id)
        if version is None or version.application_id != application_id:
            raise _not_found(f"version {version_id} of application {application_id}")
        gone = _delete_versions(state, session, [version])
        session.commit()
        for content_id in gone:
            state.content.remove(content_id)


@router.get(
    "/applications/{application_id}/versions/{version_id}/manifest",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
    tags=["applications"],
)
def get_manifest(
    application_id: ApplicationId,
    version_id: VersionId,
    state: Console,
    session: Database,
    _admin: Admin,
) -> Response:
    """The signed manifest file of one version (what ``shoal verify`` reads)."""
    version = session.get(db.ApplicationVersion, version_id)
    if version is None or version.application_id != application_id:
        raise _not_found(f"version {version_id} of application {application_id}")
    data = state.content.manifest_path(version.content_id).read_bytes()
    return Response(data, media_type="application/octet-stream")


# --- devices --------------------------------------------------------------------------


@router.get("/devices", response_model=list[schemas.DeviceOut], responses=ERRORS, tags=["devices"])
def list_devices(
    state: Console,
    session: Database,
    _admin: Admin,
    office: Annotated[schemas.Name | None, Query(description="only this office")] = None,
) -> list[schemas.DeviceOut]:
    """Devices (client installs) as their servers reported them."""
    query = select(db.Device).order_by(db.Device.id)
    if office is not None:
        query = query.where(db.Device.office == office)
    window = timedelta(seconds=state.config.online_window_seconds)
    now = state.clock()
    return [records.device_out(session, device, now, window) for device in session.scalars(query)]


@router.get(
    "/devices/{device_id}", response_model=schemas.DeviceOut, responses=ERRORS, tags=["devices"]
)
def get_device(
    device_id: Annotated[str, Path(min_length=1, max_length=100)],
    state: Console,
    session: Database,
    _admin: Admin,
) -> schemas.DeviceOut:
    """One device: version, office, status, cached content."""
    device = session.get(db.Device, device_id)
    if device is None:
        raise _not_found(f"device {device_id!r}")
    window = timedelta(seconds=state.config.online_window_seconds)
    return records.device_out(session, device, state.clock(), window)


@router.delete("/devices/{device_id}", status_code=204, responses=ERRORS, tags=["devices"])
def retire_device(
    device_id: Annotated[str, Path(min_length=1, max_length=100)],
    state: Console,
    session: Database,
    _admin: Admin,
) -> None:
    """Forget a device (uninstalled): frees its licence seat."""
    device = session.get(db.Device, device_id)
    if device is None:
        raise _not_found(f"device {device_id!r}")
    session.execute(delete(db.DeviceContent).where(db.DeviceContent.device_id == device_id))
    session.delete(device)
    if session.get(db.RetiredDevice, device_id) is None:
        # It never again receives a confidential key, even if its server reports it.
        session.add(db.RetiredDevice(device_id=device_id, retired_at=state.clock()))
    session.commit()
    log.info("retired device %s: %s", device_id, state.licence_status(session).message)


# --- assignments ----------------------------------------------------------------------


@router.post(
    "/assignments",
    status_code=201,
    response_model=schemas.AssignmentOut,
    responses=ERRORS,
    tags=["assignments"],
)
def create_assignment(
    body: schemas.AssignmentRequest, state: Console, session: Database, _admin: Admin
) -> schemas.AssignmentOut:
    """Assign an application version to a device, an office (and below) or everyone."""
    version = session.get(db.ApplicationVersion, body.version_id)
    if version is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"version_id: application version {body.version_id} does not exist",
        )
    tree = records.load_topology(session, state.topology_cache)
    if body.target_kind == schemas.TargetKind.EVERYONE:
        if body.target is not None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "target: must be empty when target_kind is 'everyone'",
            )
    elif body.target is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"target: name the {body.target_kind.value} to assign to",
        )
    elif body.target_kind == schemas.TargetKind.OFFICE and tree.get(body.target) is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"target: no office named {body.target!r}"
        )
    elif body.target_kind == schemas.TargetKind.DEVICE and not session.get(db.Device, body.target):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"target: no device with ID {body.target!r}"
        )
    assignment = db.Assignment(
        version_id=version.id,
        target_kind=body.target_kind.value,
        target=body.target,
        background=body.background,
        created_at=state.clock(),
    )
    session.add(assignment)
    state.record_change(session, "assignments_changed")
    session.commit()
    return records.assignment_out(session, assignment, tree)


@router.get(
    "/assignments",
    response_model=list[schemas.AssignmentOut],
    responses=ERRORS,
    tags=["assignments"],
)
def list_assignments(
    state: Console, session: Database, _admin: Admin
) -> list[schemas.AssignmentOut]:
    """Every assignment with progress aggregated from what servers reported."""
    tree = records.load_topology(session, state.topology_cache)
    return [
        records.assignment_out(session, assignment, tree)
        for assignment in session.scalars(select(db.Assignment).order_by(db.Assignment.id))
    ]


@router.get(
    "/assignments/{assignment_id}",
    response_model=schemas.AssignmentOut,
    responses=ERRORS,
    tags=["assignments"],
)
def get_assignment(
    assignment_id: RowIdPath, state: Console, session: Database, _admin: Admin
) -> schemas.AssignmentOut:
    """One assignment with its progress."""
    assignment = session.get(db.Assignment, assignment_id)
    if assignment is None:
        raise _not_found(f"assignment {assignment_id}")
    return records.assignment_out(
        session, assignment, records.load_topology(session, state.topology_cache)
    )


@router.delete(
    "/assignments/{assignment_id}", status_code=204, responses=ERRORS, tags=["assignments"]
)
def delete_assignment(
    assignment_id: RowIdPath, state: Console, session: Database, _admin: Admin
) -> None:
    """Withdraw an assignment (clients keep what they cached)."""
    assignment = session.get(db.Assignment, assignment_id)
    if assignment is None:
        raise _not_found(f"assignment {assignment_id}")
    session.delete(assignment)
    state.record_change(session, "assignments_changed")
    session.commit()


# --- topology -------------------------------------------------------------------------

TOPOLOGY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TopologyIn"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


def _offices_out(session: Database, tree: topology.Topology) -> list[schemas.OfficeOut]:
    counts = dict(
        session.execute(select(db.Device.office, func.count()).group_by(db.Device.office)).all()
    )
    auto = records.auto_generated_offices(session)
    return [
        schemas.OfficeOut(
            office=office.name,
            parent=office.parent,
            type=office.type.value,
            subnets=[str(subnet) for subnet in office.subnets],
            auto_generated=office.name in auto,
            devices=counts.get(office.name, 0),
        )
        for office in tree.offices
    ]


@router.get(
    "/topology",
    responses={
        **ERRORS,
        200: {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TopologyOut"}},
                "text/csv": {"schema": {"type": "string"}},
            }
        },
    },
    tags=["topology"],
)
def get_topology(
    state: Console,
    session: Database,
    _admin: Admin,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    """Download the office tree as JSON (default) or CSV (office,parent,type,subnets)."""
    tree = records.load_topology(session, state.topology_cache)
    if format == "csv":
        return PlainTextResponse(
            tree.to_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="topology.csv"'},
        )
    document = schemas.TopologyOut(offices=_offices_out(session, tree))
    return Response(document.model_dump_json(), media_type="application/json")


@router.put(
    "/topology",
    response_model=schemas.TopologyOut,
    responses={**ERRORS, 413: {"model": schemas.Problem}, 415: {"model": schemas.Problem}},
    openapi_extra=TOPOLOGY_BODY,
    tags=["topology"],
)
async def put_topology(request: Request, state: Console, _admin: Admin) -> schemas.TopologyOut:
    """Replace the office tree with a CSV or JSON upload (validated as a whole first).

    Errors name the CSV line (or JSON entry) and the field: bad CIDR, overlapping
    subnets, unknown parent, a cycle, a second root, and the limits (offices, subnets,
    levels, bytes). Parsing runs in a worker thread, never on the event loop.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("text/csv", "application/json", ""):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send the topology as text/csv or application/json, not {content_type!r}",
        )
    body = await _read_capped(request, MAX_TOPOLOGY_BYTES, "a topology file")
    tree = await anyio.to_thread.run_sync(_parse_topology, body, content_type)
    return await anyio.to_thread.run_sync(_replace_topology, state, tree)


async def _read_capped(request: Request, limit: int, what: str) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(what, limit)
    received = bytearray()
    async for piece in request.stream():
        received += piece
        if len(received) > limit:
            raise _too_large(what, limit)
    return bytes(received)


def _too_large(what: str, limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, f"{what} is larger than the limit of {limit} bytes"
    )


def _parse_topology(body: bytes, content_type: str) -> topology.Topology:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "topology file is not UTF-8 text"
        ) from None
    if content_type == "text/csv":
        return topology.parse_csv(text)
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"topology JSON is not valid JSON: {error}"
        ) from None
    return topology.parse_json(document)


def _replace_topology(state: ConsoleState, tree: topology.Topology) -> schemas.TopologyOut:
    with state.topology_lock, state.sessions() as session:
        records.save_topology(state, session, tree)
        session.commit()
        log.info("topology replaced: %d offices", len(tree.offices))
        return schemas.TopologyOut(offices=_offices_out(session, tree))


@router.get("/offices", response_model=list[schemas.OfficeOut], responses=ERRORS, tags=["topology"])
def list_offices(state: Console, session: Database, _admin: Admin) -> list[schemas.OfficeOut]:
    """Offices, parents first, with their device counts."""
    return _offices_out(session, records.load_topology(session, state.topology_cache))


# --- P2P settings ---------------------------------------------------------------------


@router.get(
    "/settings/p2p", response_model=schemas.P2PSettings, responses=ERRORS, tags=["settings"]
)
def get_p2p_settings(session: Database, _admin: Admin) -> schemas.P2PSettings:
    """Ports, alternative ports and bandwidth policy per office."""
    return records.load_p2p_settings(session)


@router.put(
    "/settings/p2p", response_model=schemas.P2PSettings, responses=ERRORS, tags=["settings"]
)
def put_p2p_settings(
    body: schemas.P2PSettings, state: Console, session: Database, _admin: Admin
) -> schemas.P2PSettings:
    """Replace the P2P settings; servers pick them up from the change feed."""
    main = [body.ports.discovery, body.ports.control, body.ports.foreground_data]
    main.append(body.ports.background_data)
    if len(set(main)) != 4:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "ports: the four ports must be different"
        )
    if body.alternative_ports is not None:
        alternative = body.alternative_ports.model_dump().values()
        if len(set(alternative)) != 4:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "alternative_ports: the four ports must be different",
            )
        clash = set(alternative) & set(main)
        if clash:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"alternative_ports: {sorted(clash)} already used by the main ports",
            )
    tree = records.load_topology(session, state.topology_cache)
    seen: set[str] = set()
    for index, policy in enumerate(body.bandwidth):
        if tree.get(policy.office) is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"bandwidth[{index}].office: no office named {policy.office!r}",
            )
        if policy.office in seen:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"bandwidth[{index}].office: {policy.office!r} has two policies",
            )
        seen.add(policy.office)
    records.store_p2p_settings(session, body)
    state.record_change(session, "settings_changed")
    session.commit()
    return body


# --- P2P servers and reports ----------------------------------------------------------


@router.get("/servers", response_model=list[schemas.ServerOut], responses=ERRORS, tags=["servers"])
def list_servers(session: Database, _admin: Admin) -> list[schemas.ServerOut]:
    """Registered P2P servers, their versions and whether they are activated."""
    return [
        schemas.ServerOut(
            id=row.id,
            name=row.name,
            address=row.address,
            version=row.version,
            registered_at=row.registered_at,
            last_seen=row.last_seen,
            activated=row.activated_at is not None,
        )
        for row in session.scalars(select(db.Server).order_by(db.Server.id))
    ]


@router.get(
    "/servers/auth-key", response_model=schemas.ServerKeyOut, responses=ERRORS, tags=["servers"]
)
def server_auth_key(state: Console, _admin: Admin) -> schemas.ServerKeyOut:
    """The shared key to configure on every P2P server."""
    return schemas.ServerKeyOut(key=state.server_key)


@router.get(
    "/servers/{server_id}/enrollment-bundle",
    response_model=schemas.EnrollmentBundle,
    responses=ERRORS,
    tags=["servers"],
)
def enrollment_bundle(
    server_id: Annotated[str, Path(max_length=100)],
    state: Console,
    session: Database,
    _admin: Admin,
) -> schemas.EnrollmentBundle:
    """What a device needs to join this P2P server: save it to a file (mode 0600) and run
    ``shoal client enroll FILE``. It pins the console key on the device and holds the
    enrollment token (a secret: never put it on a command line)."""
    row = session.get(db.Server, server_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"P2P server {server_id!r} not found")
    return build_bundle(state, session, row)


@router.get(
    "/reports/downloads",
    response_model=list[schemas.DownloadReportRow],
    responses=ERRORS,
    tags=["reports"],
)
def download_report(session: Database, _admin: Admin) -> list[schemas.DownloadReportRow]:
    """Bytes from peers and from servers, per content and office (all servers summed)."""
    rows = session.execute(
        select(
            db.DownloadStat.content_id,
            db.DownloadStat.office,
            func.sum(db.DownloadStat.bytes_from_peers),
            func.sum(db.DownloadStat.bytes_from_server),
        )
        .group_by(db.DownloadStat.content_id, db.DownloadStat.office)
        .order_by(db.DownloadStat.content_id, db.DownloadStat.office)
    ).all()
    report = []
    for content_id, office, from_peers, from_server in rows:
        total = int(from_peers) + int(from_server)
        report.append(
            schemas.DownloadReportRow(
                content_id=content_id,
                office=office,
                bytes_from_peers=int(from_peers),
                bytes_from_server=int(from_server),
                peer_share=round(int(from_peers) / total, 4) if total else 0.0,
            )
        )
    return report
