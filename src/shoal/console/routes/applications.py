"""Applications and versions: upload (streamed to disk), list, change, delete, manifest."""

from __future__ import annotations

import errno
import logging
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from starlette.requests import ClientDisconnect

from shoal.console import schemas
from shoal.console.auth import Admin, Console, Database
from shoal.console.content import Upload
from shoal.console.routes import installs
from shoal.console.routes.common import ERRORS, Pages, RowIdPath, Search
from shoal.console.services import applications
from shoal.console.services.errors import DiskFull, Invalid, Refused, TooLarge
from shoal.console.state import ConsoleState
from shoal.core.chunking import ALLOWED_CHUNK_SIZES

log = logging.getLogger("shoal.console")

router = APIRouter(tags=["applications"])
UPLOAD_ERRORS: dict[int | str, dict[str, object]] = {
    **ERRORS,
    413: {"model": schemas.Problem},
    507: {"model": schemas.Problem},
}
UPLOAD_WRITE_BLOCK = 1 << 20
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
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
        raise Invalid(f"chunk_size {chunk_size} is not a power of two from 65536 to 16777216")
    install_spec = installs.spec_from_query(install)
    limit = state.config.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        if int(declared) > limit:
            raise _upload_too_large(limit)
        free = await anyio.to_thread.run_sync(state.content.free_bytes)
        if int(declared) > free:
            raise _disk_full(state, name, version, 0)
    await anyio.to_thread.run_sync(applications.check_version_free, state, name, version)
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
            applications.register_upload, state, upload, name, version, confidential, chunk_size
        )
        if install_spec is not None:
            uploaded = await anyio.to_thread.run_sync(
                installs.set_spec_of_upload, state, uploaded, install_spec
            )
        return uploaded
    except ClientDisconnect:
        log.info("upload of %s %s abandoned by the client", name, version)
        raise Refused("upload interrupted") from None
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        raise _disk_full(state, name, version, received) from None
    finally:
        if upload is not None:
            upload.discard()


def _upload_too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the upload is larger than this console accepts ({limit} bytes, "
        f"{limit / (1 << 30):.1f} GiB): raise the limit with 'shoal console --max-upload SIZE'"
    )


def _disk_full(state: ConsoleState, name: str, version: str, received: int) -> DiskFull:
    free = state.content.free_bytes()
    log.error(
        "upload of %s %s refused: the disk of %s is full (%d bytes received, %d bytes free)",
        name,
        version,
        state.content.root,
        received,
        free,
    )
    return DiskFull(
        f"the console's disk is full: the upload of {name} {version} was stopped"
        f"{f' after {received} bytes' if received else ''} and removed; {free} bytes are free "
        "where the console keeps packages: free some space (or delete unused versions) and "
        "upload again"
    )


@router.get("/applications", response_model=schemas.Page[schemas.ApplicationOut], responses=ERRORS)
def list_applications(
    session: Database, _admin: Admin, pages: Pages, search: Search = None
) -> schemas.Page[schemas.ApplicationOut]:
    """Applications by name, each with its versions."""
    return applications.list_applications(session, pages.limit, pages.offset, search)


@router.get("/versions", response_model=schemas.Page[schemas.VersionOut], responses=ERRORS)
def list_versions(
    session: Database, _admin: Admin, pages: Pages, search: Search = None
) -> schemas.Page[schemas.VersionOut]:
    """Every version of every application (by application name, newest version first):
    what an assignment chooses from."""
    return applications.list_versions(session, pages.limit, pages.offset, search)


@router.get(
    "/applications/{application_id}", response_model=schemas.ApplicationOut, responses=ERRORS
)
def get_application(
    application_id: RowIdPath, session: Database, _admin: Admin
) -> schemas.ApplicationOut:
    """One application with its versions."""
    return applications.get_application(session, application_id)


@router.patch(
    "/applications/{application_id}", response_model=schemas.ApplicationOut, responses=ERRORS
)
def change_application(
    application_id: RowIdPath,
    body: schemas.ApplicationChange,
    session: Database,
    _admin: Admin,
) -> schemas.ApplicationOut:
    """Set or clear the confidential flag: versions uploaded from then on are encrypted
    (or not); versions already uploaded stay as they were packed."""
    return applications.set_confidential(session, application_id, body.confidential)


@router.delete("/applications/{application_id}", status_code=204, responses=ERRORS)
def delete_application(
    application_id: RowIdPath, state: Console, session: Database, _admin: Admin
) -> None:
    """Delete an application, its versions, their assignments and unshared content."""
    applications.delete_application(state, session, application_id)


@router.delete(
    "/applications/{application_id}/versions/{version_id}", status_code=204, responses=ERRORS
)
def delete_version(
    application_id: RowIdPath,
    version_id: RowIdPath,
    state: Console,
    session: Database,
    _admin: Admin,
) -> None:
    """Delete one version (and its assignments)."""
    applications.delete_version(state, session, application_id, version_id)


@router.get(
    "/applications/{application_id}/versions/{version_id}/manifest",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
def get_manifest(
    application_id: RowIdPath,
    version_id: RowIdPath,
    state: Console,
    session: Database,
    _admin: Admin,
) -> Response:
    """The signed manifest file of one version (what ``shoal verify`` reads)."""
    data = applications.manifest_bytes(state, session, application_id, version_id)
    return Response(data, media_type="application/octet-stream")
