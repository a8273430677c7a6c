"""The P2P servers' swarm reports: peers banned per office and rendezvous holders now.

Theory of operation
-------------------
A P2P server bans a peer in an office when enough distinct devices reported bad chunks
from it (``shoal.server.bad_peers``), and per office and content a few devices (the
rendezvous stripe holders, ``shoal.server.rendezvous``) bring the content over the WAN.
With each report round the server sends both as a snapshot (``POST
/api/v1/link/swarm``): ``record_report`` replaces that server's rows. So what the
console shows is what each server said last; a ban is shown until its end, and holders
only while their server keeps reporting (``online_window_seconds``), since a server
that went silent may have handed the stripes on long ago.

The dashboard lists each ban in force as a problem (device by host name, office, the
application whose chunks were bad and how many devices said so, since when); the office
view (``office_detail``) shows per content the bytes by source against the package
size and who is bringing it in now.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from shoal.console import db, records, schemas
from shoal.console.services import topology
from shoal.console.services.errors import NotFound
from shoal.console.state import ConsoleState

ATTENTION_BANS_LISTED = 10
"""Bans listed one by one on the dashboard's problems; more are summed in one line."""


def record_report(
    session: Session, server_id: str, body: schemas.SwarmReport, now: datetime
) -> schemas.SwarmReportOut:
    """Replace the server's bans and holders with the report's (each record validated on
    its own: a bad one is refused and named, the others recorded). The caller commits."""
    refused: list[schemas.RecordRefused] = []
    bans: dict[tuple[str, str], schemas.SwarmBan] = {}
    for index, raw in enumerate(body.banned):
        valid = records.validate_record(schemas.SwarmBan, index, raw, "peer_ip")
        if isinstance(valid, schemas.RecordRefused):
            refused.append(valid)
        else:
            bans[(valid.office, valid.peer_ip)] = valid
    holders: dict[tuple[str, str, str], int] = {}
    for index, raw_group in enumerate(body.holders):
        held = records.validate_record(schemas.SwarmHolders, index, raw_group, "content_id")
        if isinstance(held, schemas.RecordRefused):
            refused.append(held)
            continue
        for stripe, device_id in enumerate(held.devices):
            holders.setdefault((held.office, held.content_id, device_id), stripe)
    session.execute(delete(db.BannedPeer).where(db.BannedPeer.server_id == server_id))
    session.execute(delete(db.RendezvousHolder).where(db.RendezvousHolder.server_id == server_id))
    session.add_all(
        db.BannedPeer(
            server_id=server_id,
            office=ban.office,
            peer_ip=ban.peer_ip,
            device_id=ban.device_id,
            content_id=ban.content_id,
            reporters=ban.reporters,
            banned_at=_from_unix(ban.since),
            until=_from_unix(ban.until),
            reported_at=now,
        )
        for ban in bans.values()
    )
    session.add_all(
        db.RendezvousHolder(
            server_id=server_id,
            office=office,
            content_id=content_id,
            device_id=device_id,
            stripe=stripe,
            reported_at=now,
        )
        for (office, content_id, device_id), stripe in holders.items()
    )
    return schemas.SwarmReportOut(banned=len(bans), holders=len(holders), refused=refused)


def _from_unix(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def change_token(session: Session) -> str:
    """Moves whenever a server reports bans or holders (the UI then redraws them)."""
    banned = session.scalar(select(func.max(db.BannedPeer.reported_at)))
    held = session.scalar(select(func.max(db.RendezvousHolder.reported_at)))
    return f"{banned or ''}:{held or ''}"


def _application_names(session: Session, content_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """content ID -> (application, version) of the oldest version with that content."""
    names: dict[str, tuple[str, str]] = {}
    for content_id, application, version in session.execute(
        select(db.ApplicationVersion.content_id, db.Application.name, db.ApplicationVersion.version)
        .join(db.Application)
        .where(db.ApplicationVersion.content_id.in_(set(content_ids)))
        .order_by(db.ApplicationVersion.id)
    ):
        names.setdefault(content_id, (application, version))
    return names


def _hostnames(session: Session, device_ids: Iterable[str]) -> dict[str, str]:
    return dict(
        session.execute(
            select(db.Device.id, db.Device.hostname).where(db.Device.id.in_(set(device_ids)))
        ).all()
    )


def _banned_out(session: Session, rows: Sequence[db.BannedPeer]) -> list[schemas.BannedPeerOut]:
    if not rows:
        return []  # the usual case: no lookups
    hostnames = _hostnames(session, (row.device_id for row in rows if row.device_id))
    # A device the server could not name is looked up by its address in that office.
    unnamed = {(row.office, row.peer_ip) for row in rows if row.device_id not in hostnames}
    by_address: dict[tuple[str, str], tuple[str, str]] = {}
    if unnamed:
        for found_id, found_name, office, address in session.execute(
            select(db.Device.id, db.Device.hostname, db.Device.office, db.Device.address).where(
                db.Device.address.in_({address for _, address in unnamed})
            )
        ):
            if office is not None and (office, address) in unnamed:
                by_address[(office, address)] = (found_id, found_name)
    applications = _application_names(session, (row.content_id for row in rows))
    servers = dict(
        session.execute(
            select(db.Server.id, db.Server.name).where(
                db.Server.id.in_({row.server_id for row in rows})
            )
        ).all()
    )
    result = []
    for row in rows:
        device_id: str | None = row.device_id
        hostname: str | None = hostnames.get(row.device_id or "")
        if hostname is None and (row.office, row.peer_ip) in by_address:
            device_id, hostname = by_address[(row.office, row.peer_ip)]
        application, version = applications.get(row.content_id, (None, None))
        result.append(
            schemas.BannedPeerOut(
                office=row.office,
                peer_ip=row.peer_ip,
                device_id=device_id,
                hostname=hostname,
                application=application,
                version=version,
                content_id=row.content_id,
                reporters=row.reporters,
                since=row.banned_at,
                until=row.until,
                server=servers.get(row.server_id, row.server_id),
            )
        )
    return result


def _bans_in_force(now: datetime, office: str | None = None) -> Select[Any]:
    query = select(db.BannedPeer).where(db.BannedPeer.until > now)
    if office is not None:
        query = query.where(db.BannedPeer.office == office)
    return query.order_by(db.BannedPeer.banned_at.desc(), db.BannedPeer.peer_ip)


def banned_peers(
    session: Session, now: datetime, limit: int, offset: int, office: str | None = None
) -> schemas.Page[schemas.BannedPeerOut]:
    """The bans in force, newest first, by device name, with their cause."""
    query = _bans_in_force(now, office)
    rows = session.scalars(query.limit(limit).offset(offset)).all()
    total = offset + len(rows)
    if len(rows) == limit or (offset and not rows):  # else the page ends the list
        count = select(func.count()).select_from(query.order_by(None).subquery())
        total = int(session.scalar(count) or 0)
    return schemas.Page(items=_banned_out(session, rows), total=total, limit=limit, offset=offset)


def describe_ban(ban: schemas.BannedPeerOut) -> str:
    """One sentence: who, where, since when, and why."""
    who = f"{ban.hostname} ({ban.peer_ip})" if ban.hostname else ban.peer_ip
    what = f"{ban.application} {ban.version}" if ban.application else ban.content_id[:12]
    devices = f"{ban.reporters} device{'s' if ban.reporters != 1 else ''}"
    return (
        f"{who} is banned in {ban.office} since {ban.since:%Y-%m-%d %H:%M} UTC: {devices} "
        f"reported bad chunks of {what} from it"
    )


def banned_attention(state: ConsoleState, session: Session) -> Iterable[schemas.Attention]:
    """The dashboard's problems: each ban in force (the newest few, then a count)."""
    page = banned_peers(session, state.clock(), ATTENTION_BANS_LISTED, 0)
    for ban in page.items:
        yield schemas.Attention(
            kind="banned_peer",
            severity="error",
            message=describe_ban(ban),
            link=f"#offices/{ban.office}",  # the office view of that office
        )
    if page.total > len(page.items):
        more = page.total - len(page.items)
        yield schemas.Attention(
            kind="banned_peer",
            severity="error",
            message=f"and {more} more banned peer{'s' if more != 1 else ''}: see the offices",
            link="#offices",
        )


def office_detail(state: ConsoleState, session: Session, name: str) -> schemas.OfficeDetail:
    """One office: its figures, each content its devices downloaded (bytes by source
    against the package size, devices holding all of it, the rendezvous holders now),
    and the peers banned in it."""
    tree = topology.load(state, session)
    office = next((candidate for candidate in tree.offices if candidate.name == name), None)
    if office is None:
        raise NotFound(f"office {name!r}")
    (figures,) = topology.offices_out(session, tree, [office])
    now = state.clock()
    traffic = {
        content_id: (int(peers), int(server))
        for content_id, peers, server in session.execute(
            select(
                db.DownloadStat.content_id,
                func.sum(db.DownloadStat.bytes_from_peers),
                func.sum(db.DownloadStat.bytes_from_server),
            )
            .where(db.DownloadStat.office == name)
            .group_by(db.DownloadStat.content_id)
        )
    }
    fresh = now - timedelta(seconds=state.config.online_window_seconds)
    holders: dict[str, list[tuple[int, str]]] = {}
    for content_id, device_id, stripe in session.execute(
        select(
            db.RendezvousHolder.content_id,
            db.RendezvousHolder.device_id,
            db.RendezvousHolder.stripe,
        ).where(db.RendezvousHolder.office == name, db.RendezvousHolder.reported_at >= fresh)
    ):
        holders.setdefault(content_id, []).append((stripe, device_id))
    content_ids = set(traffic) | set(holders)
    complete = dict(
        session.execute(
            select(db.DeviceContent.content_id, func.count())
            .join(db.Device, db.Device.id == db.DeviceContent.device_id)
            .where(
                db.Device.office == name,
                db.DeviceContent.complete.is_(True),
                db.DeviceContent.content_id.in_(content_ids),
            )
            .group_by(db.DeviceContent.content_id)
        ).all()
    )
    sizes = dict(
        session.execute(
            select(db.ApplicationVersion.content_id, func.max(db.ApplicationVersion.size))
            .where(db.ApplicationVersion.content_id.in_(content_ids))
            .group_by(db.ApplicationVersion.content_id)
        ).all()
    )
    names = _application_names(session, content_ids)
    hostnames = _hostnames(session, (device for found in holders.values() for _, device in found))
    downloads = []
    for content_id in content_ids:
        peers, server = traffic.get(content_id, (0, 0))
        size = sizes.get(content_id)
        application, version = names.get(content_id, (None, None))
        downloads.append(
            schemas.OfficeDownload(
                application=application,
                version=version,
                content_id=content_id,
                size=size,
                bytes_from_peers=peers,
                bytes_from_server=server,
                wan_copies=round(server / size, 2) if size else None,
                devices_complete=int(complete.get(content_id, 0)),
                holders=[
                    schemas.HolderOut(device_id=device, hostname=hostnames.get(device))
                    for _, device in sorted(holders.get(content_id, []))
                ],
            )
        )
    # Downloads in progress first, then by name.
    downloads.sort(key=lambda row: (not row.holders, row.application or "~", row.version or ""))
    banned = banned_peers(session, now, 100, 0, office=name).items
    return schemas.OfficeDetail(office=figures, downloads=downloads, banned=banned)
