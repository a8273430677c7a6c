"""The console side of the console <-> P2P server link, under ``/api/v1/link``.

Theory of operation
-------------------
Every request carries ``X-Shoal-Server-Key`` (the shared authentication key),
``X-Shoal-Server-Id`` and ``X-Shoal-Version``; every answer carries the console's
``X-Shoal-Version`` so the server can refuse an incompatible console too.

1. ``POST register`` with the server's name, address and X25519 public key. The
   address must be in a Central Office subnet. With an active licence the server is
   *activated*. The answer carries the server's certificate: its key, ID, name and
   address signed by the console key (``shoal.core.server_cert``), which clients
   check against the console key pinned at enrollment.
2. An activated server follows the change feed: ``GET changes?after=SEQ`` answers the
   changes after SEQ in order (``content_added``/``content_removed`` with a content ID,
   ``assignments_changed``, ``settings_changed``, ``topology_changed``,
   ``licence_changed``). With ``wait=S`` (a long poll) the console holds an empty
   answer up to S seconds until a change comes, so a server learns of a new assignment
   within ``FEED_POLL`` seconds instead of at its next sync round. A new server starts
   at 0, so it sees every application that exists: that is how activation hands it all
   content; later uploads follow as new changes. For content it fetches
   ``content/ID/manifest`` (signed by the console key given at registration) and
   ``content/ID`` (HTTP Range supported, to resume).
3. It fetches ``settings``, ``topology`` and ``assignments`` (signed) when told to.
   The assignment document has a sequence number and an expiry and is signed again
   before it expires (``shoal.console.documents``): the start of a long poll checks,
   and a new document is an ``assignments_changed`` change like any other.
4. It reports ``clients`` (its registry: this is where devices, seats and offices come
   from) and ``stats`` (running totals of bytes from peers and from the server, per
   content and office; re-sending the same totals is harmless). Both are applied record
   by record: a bad record is refused and named in the answer (``refused``: index, ID,
   field, reason), the others applied, so one bad device never freezes the rest.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from shoal import __version__, topology
from shoal.console import confidential, db, documents, records, schemas
from shoal.console.auth import Console, Database, LinkedServer, Server
from shoal.console.routes import installs
from shoal.console.services import reports
from shoal.console.state import ConsoleState
from shoal.core.changes import ChangeKind
from shoal.core.identity import device_id_of
from shoal.core.server_cert import issue_certificate
from shoal.licensing import LicenceStatus

log = logging.getLogger("shoal.console")

router = APIRouter(prefix="/api/v1/link", tags=["link"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": schemas.Problem} for code in (400, 401, 403, 404, 409, 422)
}
ContentIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
FEED_PAGE = 1000
FEED_MAX_WAIT = 30.0
FEED_POLL = 0.1
"""How often a long poll looks for new changes: the database is the only source of truth,
so this works whichever console process (or database client) recorded the change."""


def _licence_out(licence: LicenceStatus) -> schemas.LicenceOut:
    return schemas.LicenceOut(**licence.as_dict())  # type: ignore[arg-type]


def activated_server(session: Session, server: LinkedServer) -> db.Server:
    """The registered, activated server row; 403 explains what is missing."""
    row = session.get(db.Server, server.server_id)
    if row is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"P2P server {server.server_id!r} is not registered: POST /api/v1/link/register first",
        )
    if row.activated_at is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"P2P server {server.server_id!r} is not activated: save a valid licence key on "
            "the console (PUT /api/v1/license), then register again",
        )
    return row


@router.post("/register", response_model=schemas.RegistrationOut, responses=ERRORS)
def register(
    body: schemas.ServerRegistration, server: Server, state: Console, session: Database
) -> schemas.RegistrationOut:
    """Register (or re-register) a P2P server; activates it when the licence allows."""
    if body.server_id != server.server_id:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"server_id {body.server_id!r} differs from the X-Shoal-Server-Id header "
            f"{server.server_id!r}",
        )
    tree = records.load_topology(session, state.topology_cache)
    try:
        topology.check_server_address(tree, body.address)
    except topology.ServerOutsideCentralOffice as error:
        log.warning("refused P2P server %s: %s", body.server_id, error)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    now = state.clock()
    licence = state.licence_status(session)
    row = session.get(db.Server, body.server_id)
    if row is None:
        row = db.Server(
            id=body.server_id,
            name=body.name,
            address=body.address,
            version=server.version,
            registered_at=now,
            last_seen=now,
            activated_at=None,
        )
        session.add(row)
    row.name, row.address, row.version, row.last_seen = body.name, body.address, server.version, now
    if row.activated_at is None and licence.active:
        row.activated_at = now
        log.info("activated P2P server %s (%s) at %s", row.id, row.name, row.address)
    session.commit()
    activated = row.activated_at is not None
    certificate = None
    if body.public_key is not None:
        try:
            certificate = issue_certificate(
                state.signing_key,
                bytes.fromhex(body.public_key),
                row.id,
                body.address,
                row.name,
                now.timestamp(),
            ).hex()
        except ValueError as error:  # a server ID that is not a UUID, an IPv6 address
            log.warning("no certificate for P2P server %s: %s", row.id, error)
    message = (
        "activated: follow GET /api/v1/link/changes from 0 to receive every application"
        if activated
        else f"registered but not activated: {licence.message}"
    )
    if licence.seats_over:
        message += f"; licence overage: {licence.seats_over} seats over"
    return schemas.RegistrationOut(
        server_id=row.id,
        console_version=__version__,
        console_key=state.signing_key.verify_key.raw.hex(),
        activated=activated,
        licence=_licence_out(licence),
        message=message,
        certificate=certificate,
    )


@router.get("/changes", response_model=schemas.ChangeBatch, responses=ERRORS)
async def changes(
    server: Server,
    state: Console,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=FEED_PAGE)] = FEED_PAGE,
    wait: Annotated[float, Query(ge=0, le=FEED_MAX_WAIT)] = 0,
) -> schemas.ChangeBatch:
    """Changes after sequence number ``after``, oldest first (a page of ``limit``).

    With ``wait``, an empty answer is held back up to ``wait`` seconds, until a change
    arrives (a long poll). The wait holds no worker thread and no database connection:
    each look is a short query in a worker thread, FEED_POLL seconds apart.
    """
    deadline = time.monotonic() + min(wait, state.config.feed_wait_seconds)
    batch = await anyio.to_thread.run_sync(_feed_page, state, server, after, limit, True)
    while not batch.changes and time.monotonic() < deadline:
        await anyio.sleep(FEED_POLL)
        batch = await anyio.to_thread.run_sync(_feed_page, state, server, after, limit, False)
    return batch


def _feed_page(
    state: ConsoleState, server: LinkedServer, after: int, limit: int, first: bool
) -> schemas.ChangeBatch:
    with state.sessions() as session:
        if first:
            row = activated_server(session, server)
            row.last_seen = state.clock()
            session.commit()
            documents.refresh_if_due(state)  # a new one is a change in this very feed
        found = session.scalars(
            select(db.Change).where(db.Change.seq > after).order_by(db.Change.seq).limit(limit + 1)
        ).all()
        page = found[:limit]
        return schemas.ChangeBatch(
            changes=[
                schemas.ChangeOut(
                    seq=change.seq, kind=ChangeKind(change.kind), subject=change.subject
                )
                for change in page
            ],
            last_seq=page[-1].seq if page else after,
            more=len(found) > limit,
        )


def _known_content(session: Session, content_id: str) -> None:
    exists = session.scalar(
        select(db.ApplicationVersion.id).where(db.ApplicationVersion.content_id == content_id)
    )
    if exists is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"content {content_id} not found")


@router.get(
    "/content/{content_id}/manifest",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
def content_manifest(
    content_id: ContentIdPath, server: Server, state: Console, session: Database
) -> Response:
    """The signed manifest of a content ID."""
    activated_server(session, server)
    _known_content(session, content_id)
    return Response(
        state.content.manifest_path(content_id).read_bytes(),
        media_type="application/octet-stream",
    )


@router.get(
    "/content/{content_id}",
    response_class=FileResponse,
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
def content_data(
    content_id: ContentIdPath, server: Server, state: Console, session: Database
) -> FileResponse:
    """The package bytes; send ``Range: bytes=START-`` to resume."""
    activated_server(session, server)
    _known_content(session, content_id)
    return FileResponse(state.content.data_path(content_id), media_type="application/octet-stream")


@router.get("/settings", response_model=schemas.P2PSettings, responses=ERRORS)
def link_settings(server: Server, session: Database) -> schemas.P2PSettings:
    """P2P settings (ports, alternative ports, bandwidth per office) for the server."""
    activated_server(session, server)
    return records.load_p2p_settings(session)


@router.get("/topology", response_model=schemas.TopologyIn, responses=ERRORS)
def link_topology(server: Server, state: Console, session: Database) -> schemas.TopologyIn:
    """The office tree, in the JSON shape ``shoal.topology.parse_json`` reads."""
    activated_server(session, server)
    tree = records.load_topology(session, state.topology_cache)
    return schemas.TopologyIn.model_validate(tree.to_json())


@router.get("/assignments", response_model=schemas.SignedAssignments, responses=ERRORS)
def link_assignments(
    server: Server, state: Console, session: Database
) -> schemas.SignedAssignments:
    """Every assignment, signed by the console (office targets list their sub-offices),
    with a sequence number and an expiry, and the console's key rotation statements."""
    activated_server(session, server)
    return documents.signed_assignments(state)


@router.post("/clients", response_model=schemas.ClientReportOut, responses=ERRORS)
async def report_clients(
    body: schemas.ClientReport, server: Server, state: Console
) -> schemas.ClientReportOut:
    """The server's client registry: creates/updates devices, places them in offices.

    Applied record by record: a record with an invalid field (a control character in a
    host name, a counter out of range...) is refused and listed in ``refused`` with its
    index, device ID, field and reason; every other record is applied.
    """
    return await anyio.to_thread.run_sync(_record_clients, state, server, body)


REPORT_BATCH = 500
"""Client records applied per transaction. A P2P server reports its whole registry
(10,000 devices) every few seconds; in one transaction SQLite's single writer lock
would be held for the whole report and every other write of the console (an upload, an
assignment) would wait past its busy timeout ("database is locked"). Between batches
the lock is free, and each record is applied on its own anyway (see the module doc)."""


def _record_clients(
    state: ConsoleState, server: LinkedServer, body: schemas.ClientReport
) -> schemas.ClientReportOut:
    raw_records: list[object] = list(body.clients)
    placed: list[schemas.ClientPlaced] = []
    refused: list[schemas.RecordRefused] = []
    first: LicenceStatus | None = None
    with state.topology_lock:
        for start in range(0, max(len(raw_records), 1), REPORT_BATCH):
            before, after = _record_batch(
                state, server, raw_records[start : start + REPORT_BATCH], start, placed, refused
            )
            first = first or before
    assert first is not None
    records.log_refused(state, server.server_id, "client", refused)
    if after.seats_over > first.seats_over:
        log.warning("licence overage: %s", after.message)
    return schemas.ClientReportOut(clients=placed, refused=refused, licence=_licence_out(after))


def _record_batch(
    state: ConsoleState,
    server: LinkedServer,
    raw_records: list[object],
    first_index: int,
    placed: list[schemas.ClientPlaced],
    refused: list[schemas.RecordRefused],
) -> tuple[LicenceStatus, LicenceStatus]:
    """Apply one batch of client records in one transaction; the licence status before
    and after it. Devices and their content rows are read in one query each, and only
    what changed is written (a steady registry rewrites nothing but ``last_seen``)."""
    with state.sessions() as session:
        row = activated_server(session, server)
        now = state.clock()
        row.last_seen = now
        before = state.licence_status(session)
        tree = records.load_topology(session, state.topology_cache)
        auto = records.auto_generated_offices(session)
        tree_changed = False
        reported = [
            raw["device_id"]
            for raw in raw_records
            if isinstance(raw, dict) and isinstance(raw.get("device_id"), str)
        ]
        recipients_before = confidential.recipient_state(session, reported)
        devices = {
            device.id: device
            for device in session.scalars(select(db.Device).where(db.Device.id.in_(reported)))
        }
        held: dict[str, dict[str, db.DeviceContent]] = {}
        for content_row in session.scalars(
            select(db.DeviceContent).where(db.DeviceContent.device_id.in_(reported))
        ):
            held.setdefault(content_row.device_id, {})[content_row.content_id] = content_row
        applied: list[schemas.ClientRecord] = []
        for index, raw in enumerate(raw_records, start=first_index):
            client = records.validate_record(schemas.ClientRecord, index, raw, "device_id")
            if isinstance(client, schemas.RecordRefused):
                refused.append(client)
                continue
            message: str | None = None
            office: str | None
            if client.public_key is not None and (
                device_id_of(bytes.fromhex(client.public_key)).hex() != client.device_id
            ):
                problem = schemas.FieldProblem(
                    field="public_key", message="device_id is not the ID of this public key"
                )
                refused.append(
                    schemas.RecordRefused(index=index, id=client.device_id, problems=[problem])
                )
                continue
            try:
                new_tree, found = topology.with_client_subnet(tree, client.address, client.subnet)
                office = found.name
                if new_tree is not tree:
                    tree, tree_changed = new_tree, True
                    auto.add(found.name)
                    log.info("new office %r for client subnet %s", found.name, client.subnet)
            except (topology.TopologyInvalid, ValueError) as error:
                office, message = None, f"placed in no office: {error}"
            device = devices.get(client.device_id)
            if device is None:
                device = devices[client.device_id] = db.Device(
                    id=client.device_id,
                    first_seen=now,
                    licensed=before.active,
                    hostname=client.hostname,
                    address=client.address,
                    subnet=client.subnet,
                    office=office,
                    version=client.version,
                    server_id=server.server_id,
                    last_seen=now,
                )
                session.add(device)
            elif not device.licensed and before.active:
                device.licensed = True
            # The ORM writes only the columns whose value changed.
            device.hostname, device.address, device.subnet = (
                client.hostname,
                client.address,
                client.subnet,
            )
            device.office, device.version, device.server_id = office, client.version, row.id
            if client.public_key is not None:
                device.public_key = client.public_key
            device.last_seen = now
            if not device.licensed:
                refusal = f"not licensed: {before.message}"
                message = f"{message}; {refusal}" if message else refusal
            applied.append(client)
            placed.append(
                schemas.ClientPlaced(
                    device_id=client.device_id,
                    office=office,
                    licensed=device.licensed,
                    message=message,
                )
            )
        session.flush()  # new devices exist before their content and install rows
        for client in applied:
            _replace_content(session, client, held.setdefault(client.device_id, {}))
            installs.record_reports(session, client.device_id, client.installs, now)
        if tree_changed:
            records.save_topology(state, session, tree, auto)
        session.flush()
        if confidential.recipients_changed(session, tree, recipients_before, reported):
            # A device that can now receive a confidential key gets it in a newly
            # signed document, not at the next unrelated change.
            state.record_change(session, ChangeKind.ASSIGNMENTS_CHANGED)
        after = state.licence_status(session)
        session.commit()
    return before, after


def _replace_content(
    session: Session, client: schemas.ClientRecord, held: dict[str, db.DeviceContent]
) -> None:
    """The device's content rows (``held``, kept in step) become what it reported (the
    last entry of a content reported twice wins); unchanged rows are not written."""
    wanted = {entry.content_id: entry for entry in client.content}
    for content_id in [content_id for content_id in held if content_id not in wanted]:
        session.delete(held.pop(content_id))
    for content_id, entry in wanted.items():
        content_row = held.get(content_id)
        if content_row is None:
            held[content_id] = db.DeviceContent(
                device_id=client.device_id,
                content_id=content_id,
                bytes_done=entry.bytes_done,
                complete=entry.complete,
            )
            session.add(held[content_id])
        else:
            content_row.bytes_done, content_row.complete = entry.bytes_done, entry.complete


@router.post("/stats", response_model=schemas.StatReportOut, responses=ERRORS)
def report_stats(
    body: schemas.StatReport, server: Server, state: Console, session: Database
) -> schemas.StatReportOut:
    """Running totals of bytes from peers and from the server, per content and office.

    Applied entry by entry, like the client report: invalid entries are listed in
    ``refused`` and the others applied.
    """
    row = activated_server(session, server)
    now = state.clock()
    row.last_seen = now
    refused: list[schemas.RecordRefused] = []
    applied = 0
    for index, raw in enumerate(body.entries):
        entry = records.validate_record(schemas.StatEntry, index, raw, "content_id")
        if isinstance(entry, schemas.RecordRefused):
            refused.append(entry)
            continue
        stat = session.get(db.DownloadStat, (server.server_id, entry.content_id, entry.office))
        if stat is None:
            session.add(
                db.DownloadStat(
                    server_id=server.server_id,
                    content_id=entry.content_id,
                    office=entry.office,
                    bytes_from_peers=entry.bytes_from_peers,
                    bytes_from_server=entry.bytes_from_server,
                    updated_at=now,
                )
            )
        else:
            stat.bytes_from_peers = entry.bytes_from_peers
            stat.bytes_from_server = entry.bytes_from_server
            stat.updated_at = now
        session.flush()
        applied += 1
    if applied:
        reports.record_sample(session, now)
    session.commit()
    records.log_refused(state, server.server_id, "statistics", refused)
    return schemas.StatReportOut(applied=applied, refused=refused)
