"""Download reports: bytes by source per content and office, and the WAN-saved history.

Each P2P server reports running totals per (content, office); the console keeps the
latest per server (``download_stats``) and, each time statistics arrive, a sample of
their sum over everything (``wan_totals``, at most one per ``SAMPLE``). The chart's
bytes in a period are the differences between the samples that bound it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from shoal.console import db, schemas

SAMPLE = timedelta(minutes=1)
"""Samples of the running totals closer than this replace each other."""
KEPT = timedelta(days=31)
"""Samples older than this are deleted (the chart's longest period is 30 days)."""


class Period(StrEnum):
    """The chart's time axis: the last hour by minute, day by hour, 30 days by day."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "30d"


@dataclass(frozen=True, slots=True)
class _Axis:
    span: timedelta
    step: timedelta


AXES = {
    Period.HOUR: _Axis(timedelta(hours=1), timedelta(minutes=1)),
    Period.DAY: _Axis(timedelta(days=1), timedelta(hours=1)),
    Period.MONTH: _Axis(timedelta(days=30), timedelta(days=1)),
}


def totals(session: Session) -> tuple[int, int]:
    """(bytes from peers, bytes from servers) summed over every server, content, office."""
    peers, server = session.execute(
        select(
            func.coalesce(func.sum(db.DownloadStat.bytes_from_peers), 0),
            func.coalesce(func.sum(db.DownloadStat.bytes_from_server), 0),
        )
    ).one()
    return int(peers), int(server)


def record_sample(session: Session, now: datetime) -> None:
    """Sample the running totals now (in the caller's transaction, after the stats)."""
    peers, server = totals(session)
    bucket = now.replace(second=0, microsecond=0)
    row = session.get(db.WanTotal, bucket)
    if row is None:
        session.add(
            db.WanTotal(recorded_at=bucket, bytes_from_peers=peers, bytes_from_server=server)
        )
    else:
        row.bytes_from_peers, row.bytes_from_server = peers, server
    session.execute(delete(db.WanTotal).where(db.WanTotal.recorded_at < now - KEPT))


def wan_history(session: Session, period: Period, now: datetime) -> schemas.WanHistory:
    """Bytes from peers and from servers in each step of ``period``, oldest first."""
    axis = AXES[period]
    end = _floor(now, axis.step) + axis.step
    start = end - axis.span
    before = session.execute(
        select(db.WanTotal.bytes_from_peers, db.WanTotal.bytes_from_server)
        .where(db.WanTotal.recorded_at < start)
        .order_by(db.WanTotal.recorded_at.desc())
        .limit(1)
    ).first()
    last_peers, last_server = (int(before[0]), int(before[1])) if before else (0, 0)
    samples = session.execute(
        select(db.WanTotal.recorded_at, db.WanTotal.bytes_from_peers, db.WanTotal.bytes_from_server)
        .where(db.WanTotal.recorded_at >= start)
        .order_by(db.WanTotal.recorded_at)
    )
    steps = int(axis.span / axis.step)
    peers_in = [0] * steps
    server_in = [0] * steps
    for recorded_at, peers, server in samples:
        index = min(int((recorded_at - start) / axis.step), steps - 1)
        # A server that restarts from zero makes the sum fall: count no negative bytes.
        peers_in[index] += max(0, int(peers) - last_peers)
        server_in[index] += max(0, int(server) - last_server)
        last_peers, last_server = int(peers), int(server)
    return schemas.WanHistory(
        period=period.value,
        step_seconds=int(axis.step.total_seconds()),
        points=[
            schemas.WanPoint(
                start=start + index * axis.step,
                bytes_from_peers=peers_in[index],
                bytes_from_server=server_in[index],
            )
            for index in range(steps)
        ],
    )


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return epoch + ((moment - epoch) // step) * step


def download_report(
    session: Session, limit: int, offset: int, office: str | None = None
) -> schemas.Page[schemas.DownloadReportRow]:
    """Bytes from peers and from servers per content and office (all servers summed),
    with the application and version the content belongs to."""
    query = (
        select(
            db.DownloadStat.content_id,
            db.DownloadStat.office,
            func.sum(db.DownloadStat.bytes_from_peers).label("peers"),
            func.sum(db.DownloadStat.bytes_from_server).label("server"),
        )
        .group_by(db.DownloadStat.content_id, db.DownloadStat.office)
        .order_by(db.DownloadStat.content_id, db.DownloadStat.office)
    )
    if office is not None:
        query = query.where(db.DownloadStat.office == office)
    total = int(
        session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    )
    rows = session.execute(query.limit(limit).offset(offset)).all()
    names: dict[str, tuple[str, str]] = {}
    for content_id, application, version in session.execute(
        select(db.ApplicationVersion.content_id, db.Application.name, db.ApplicationVersion.version)
        .join(db.Application)
        .where(db.ApplicationVersion.content_id.in_({row[0] for row in rows}))
        .order_by(db.ApplicationVersion.id)
    ):
        names.setdefault(content_id, (application, version))
    items = []
    for content_id, office_name, from_peers, from_server in rows:
        peers, server = int(from_peers), int(from_server)
        named = names.get(content_id)
        items.append(
            schemas.DownloadReportRow(
                application=named[0] if named else None,
                version=named[1] if named else None,
                content_id=content_id,
                office=office_name,
                bytes_from_peers=peers,
                bytes_from_server=server,
                peer_share=round(peers / (peers + server), 4) if peers + server else 0.0,
            )
        )
    return schemas.Page(items=items, total=total, limit=limit, offset=offset)
