"""Bad-peer reports and the bans they lead to, per office.

Reports are counted per (office, content, peer address) from distinct reporters, at
most ``reports_per_reporter`` per reporter and ``max_reports`` in all (the oldest
forgotten first). A peer reported by ``ban_reporters`` distinct devices is banned in
that office for ``ban_seconds`` (``shoal.server.core`` then revokes its lease, leaves it
out of peer lists and names it in every check-in reply of that office).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from shoal.core.address import Address
from shoal.core.ids import ContentId
from shoal.server.limits import AbuseLimits
from shoal.wire.control import MAX_BANNED, BadPeer


@dataclass(frozen=True, slots=True)
class BadPeerReport:
    reporter: bytes
    content_id: ContentId
    peer: Address
    chunk_index: int
    at: float


@dataclass(frozen=True, slots=True)
class PeerBanned:
    """A peer reported by enough distinct devices: banned in ``office``."""

    office: str
    peer_ip: str
    content_id: ContentId
    reporters: int
    until: float


@dataclass(slots=True)
class _Reports:
    reporters: set[bytes] = field(default_factory=set)


class BadPeerBook:
    """The reports accepted and the bans they decided, bounded by ``AbuseLimits``."""

    def __init__(self, limits: AbuseLimits) -> None:
        self.limits = limits
        self.reports: deque[BadPeerReport] = deque(maxlen=limits.max_reports)
        """Accepted distinct reports not yet persisted (the shell drains them)."""
        self.new_bans: deque[PeerBanned] = deque(maxlen=1000)
        self.bans_total = 0
        """Bans decided since start (``new_bans`` is drained by the shell)."""
        self.dropped_reports = 0
        self._reports: OrderedDict[tuple[str, ContentId, str], _Reports] = OrderedDict()
        self._reports_by: dict[bytes, int] = {}
        self._bans: dict[str, dict[str, float]] = {}  # office -> peer IP -> until
        self._why: dict[tuple[str, str], PeerBanned] = {}  # (office, peer IP) -> the ban

    def reporters(self) -> dict[tuple[str, str], int]:
        """(office, peer IP) -> distinct devices that reported the peer for bad chunks
        (of any content), over the reports kept (at most ``max_reports``)."""
        reporters: dict[tuple[str, str], set[bytes]] = {}
        for (office, _content_id, peer_ip), reports in self._reports.items():
            reporters.setdefault((office, peer_ip), set()).update(reports.reporters)
        return {key: len(devices) for key, devices in reporters.items()}

    def report(self, office: str, reporter: bytes, body: BadPeer, now: float) -> PeerBanned | None:
        """Count a report from a distinct reporter; the ban it decides, if any."""
        limits = self.limits
        peer_ip = body.peer[0]
        key = (office, body.content_id, peer_ip)
        reports = self._reports.get(key)
        if reports is not None and reporter in reports.reporters:
            return None  # the same reporter again: counted once
        if self._reports_by.get(reporter, 0) >= limits.reports_per_reporter:
            self.dropped_reports += 1
            return None
        if reports is None:
            if len(self._reports) >= limits.max_reports:
                _, oldest = self._reports.popitem(last=False)
                for earlier in oldest.reporters:
                    self._reports_by[earlier] -= 1
                    if not self._reports_by[earlier]:
                        del self._reports_by[earlier]
            reports = self._reports[key] = _Reports()
        reports.reporters.add(reporter)
        self._reports_by[reporter] = self._reports_by.get(reporter, 0) + 1
        self.reports.append(
            BadPeerReport(reporter, body.content_id, body.peer, body.chunk_index, now)
        )
        banned = self._bans.setdefault(office, {})
        if len(reports.reporters) < limits.ban_reporters or banned.get(peer_ip, 0.0) > now:
            return None
        until = banned[peer_ip] = now + limits.ban_seconds
        self.bans_total += 1
        ban = PeerBanned(office, peer_ip, body.content_id, len(reports.reporters), until)
        self.new_bans.append(ban)
        self._why[(office, peer_ip)] = ban
        return ban

    def reported(self, office: str, content_id: ContentId, peer_ip: str, reporter: bytes) -> bool:
        """Did ``reporter`` report ``peer_ip`` for bad chunks of ``content_id`` (a report
        still kept), banned or not yet?"""
        reports = self._reports.get((office, content_id, peer_ip))
        return reports is not None and reporter in reports.reporters

    def is_banned(self, office: str | None, ip: str, now: float) -> bool:
        return office is not None and self._bans.get(office, {}).get(ip, 0.0) > now

    def banned_in(self, office: str | None, now: float) -> tuple[str, ...]:
        """The peers banned in ``office`` now (the newest bans first, at most 32)."""
        if office is None or office not in self._bans:
            return ()
        banned = self._bans[office]
        for ip in [ip for ip, until in banned.items() if until <= now]:
            del banned[ip]
        return tuple(reversed(banned))[:MAX_BANNED]

    def current_bans(self, now: float) -> list[PeerBanned]:
        """Every ban in force now, each with the ban that decided it (what the console
        shows: office, peer, content, reporters, until); expired ones are forgotten."""
        for key in [key for key, ban in self._why.items() if ban.until <= now]:
            del self._why[key]
        return list(self._why.values())
