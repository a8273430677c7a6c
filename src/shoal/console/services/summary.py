"""The dashboard's summary: counts, licence, WAN saved, what needs a person, and the
change tokens that tell the UI which lists to fetch again.

Every figure is one aggregate query, so the summary costs the same with 10 devices or
10,000 and the UI can poll it every few seconds; the devices are counted in one pass for
every figure that needs them (total, online, seats used, other client versions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shoal import __version__
from shoal.console import db, records, schemas
from shoal.console.security import certificate_fingerprint
from shoal.console.services import installs, reports, swarm
from shoal.console.state import ConsoleState
from shoal.licensing import LicenceStatus
from shoal.licensing import evaluate as evaluate_licence

LICENCE_WARNING_DAYS = 30
"""A licence that expires within this many days is shown as needing attention."""

AttentionCheck = Callable[[ConsoleState, Session], Iterable[schemas.Attention]]


@dataclass(frozen=True, slots=True)
class _DeviceCounts:
    """The devices' figures, read in one pass over the devices."""

    total: int
    online: int
    last_seen: datetime | None
    licensed: int
    other_version: int

    @classmethod
    def read(cls, session: Session, horizon: datetime) -> _DeviceCounts:
        device = db.Device
        total, online, last_seen, licensed, other = session.execute(
            select(
                func.count(),
                func.count().filter(device.last_seen >= horizon),
                func.max(device.last_seen),
                func.count().filter(device.licensed.is_(True)),
                func.count().filter(device.version != __version__),
            ).select_from(device)
        ).one()
        return cls(int(total), int(online), last_seen, int(licensed), int(other))


def _licence_attention(licence: LicenceStatus) -> Iterable[schemas.Attention]:
    if not licence.active:
        yield schemas.Attention(
            kind="licence", severity="error", message=licence.message, link="#licence"
        )
    elif licence.days_left is not None and licence.days_left <= LICENCE_WARNING_DAYS:
        yield schemas.Attention(
            kind="licence_expiring",
            severity="warning",
            message=f"the licence expires in {licence.days_left} days ({licence.expires})",
            link="#licence",
        )
    if licence.seats_over:
        yield schemas.Attention(
            kind="overage",
            severity="error",
            message=f"{licence.seats_over} seat{'s' if licence.seats_over != 1 else ''} over "
            f"the {licence.seats} purchased ({licence.seats_used} used)",
            link="#licence",
        )


def _server_attention(state: ConsoleState, session: Session) -> Iterable[schemas.Attention]:
    horizon = state.clock() - timedelta(seconds=state.config.online_window_seconds)
    servers = session.execute(
        select(db.Server.name, db.Server.last_seen, db.Server.version, db.Server.activated_at)
    ).all()
    if not servers:
        yield schemas.Attention(
            kind="no_server",
            severity="warning",
            message="no P2P server has registered yet: set one up",
            link="#servers",
        )
    for name, last_seen, version, activated_at in servers:
        if last_seen < horizon:
            yield schemas.Attention(
                kind="server_offline",
                severity="error",
                message=f"P2P server {name} is offline (last seen {last_seen:%Y-%m-%d %H:%M} UTC)",
                link="#servers",
            )
        if version != __version__:
            yield schemas.Attention(
                kind="version_mismatch",
                severity="warning",
                message=f"P2P server {name} runs {version}, the console {__version__}",
                link="#servers",
            )
        if activated_at is None:
            yield schemas.Attention(
                kind="server_inactive",
                severity="warning",
                message=f"P2P server {name} is not activated: save the licence key",
                link="#licence",
            )


def _device_attention(other: int) -> Iterable[schemas.Attention]:
    if other:
        yield schemas.Attention(
            kind="version_mismatch",
            severity="warning",
            message=f"{other} device{'s' if other != 1 else ''} run a client version other than "
            f"the console's {__version__}",
            link="#devices",
        )


def _install_attention(_state: ConsoleState, session: Session) -> Iterable[schemas.Attention]:
    failures, devices = installs.failed_installs(session)
    if failures:
        yield schemas.Attention(
            kind="install_failed",
            severity="error",
            message=f"{failures} install{'s' if failures != 1 else ''} failed on {devices} "
            f"device{'s' if devices != 1 else ''}: see the exit codes and output",
            link="#assignments",
        )


ATTENTION_CHECKS: list[AttentionCheck] = [
    _server_attention,
    _install_attention,
    swarm.banned_attention,
]
"""What the dashboard checks besides the licence and the devices' versions (read with
the summary's own figures). A resource that can need a person appends its own check
here."""


def _token(*parts: object) -> str:
    return ":".join("" if part is None else str(part) for part in parts)


def summary(state: ConsoleState, session: Session) -> schemas.Summary:
    now = state.clock()
    horizon = now - timedelta(seconds=state.config.online_window_seconds)
    devices = _DeviceCounts.read(session, horizon)
    licence = evaluate_licence(state.licence(session), devices.licensed, now)
    servers, servers_online, servers_seen = session.execute(
        select(
            func.count(),
            func.count().filter(db.Server.last_seen >= horizon),
            func.max(db.Server.last_seen),
        ).select_from(db.Server)
    ).one()
    stats_at = session.scalar(select(func.max(db.DownloadStat.updated_at)))
    feed = session.scalar(select(func.max(db.Change.seq)))
    applications = session.scalar(select(func.count()).select_from(db.Application)) or 0
    assignments = session.scalar(select(func.count()).select_from(db.Assignment)) or 0
    from_peers, from_server = reports.totals(session)
    moved = from_peers + from_server
    return schemas.Summary(
        version=__version__,
        licence=schemas.LicenceOut(**licence.as_dict()),  # type: ignore[arg-type]
        devices=schemas.CountOf(total=devices.total, online=devices.online),
        servers=schemas.CountOf(total=servers, online=servers_online),
        offices=len(records.load_topology(session, state.topology_cache).offices),
        applications=applications,
        assignments=assignments,
        wan=schemas.WanSaved(
            bytes_from_peers=from_peers,
            bytes_from_server=from_server,
            saved_share=round(from_peers / moved, 4) if moved else 0.0,
        ),
        attention=[
            *_licence_attention(licence),
            *_device_attention(devices.other_version),
            *(item for check in ATTENTION_CHECKS for item in check(state, session)),
        ],
        changed={
            # Uploads, assignments, topology, settings and licence are all on the feed.
            "feed": _token(feed),
            "devices": _token(devices.total, devices.last_seen),
            "servers": _token(servers, servers_seen),
            "stats": _token(stats_at),
            "swarm": swarm.change_token(session),
        },
    )


def status(state: ConsoleState, session: Session) -> schemas.StatusOut:
    """Version, signing key, TLS fingerprint, licence (with any overage) and counts."""

    def count(model: type[db.Base]) -> int:
        return session.scalar(select(func.count()).select_from(model)) or 0

    return schemas.StatusOut(
        version=__version__,
        console_key_id=state.signing_key.verify_key.key_id.hex(),
        tls_fingerprint=certificate_fingerprint(state.cert_path) if state.cert_path else None,
        licence=schemas.LicenceOut(**state.licence_status(session).as_dict()),  # type: ignore[arg-type]
        applications=count(db.Application),
        devices=count(db.Device),
        servers=count(db.Server),
    )
