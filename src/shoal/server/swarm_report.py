"""What the server tells the console about its swarms besides statistics: the peers
banned in each office (device, cause, since when) and the rendezvous holders of each
content being brought into each office now.

Computed on the loop thread from ``ServerCore`` (whose times are the loop's clock) and
converted to wall-clock seconds for the console, which shows them on its dashboard and
office view.
"""

from __future__ import annotations

from shoal.server.console_link import ReportedBan, ReportedHolders
from shoal.server.core import ServerCore


def swarm_report(
    core: ServerCore, now: float, wall_now: float
) -> tuple[list[ReportedBan], list[ReportedHolders]]:
    """The bans in force and the live holders at loop time ``now`` (wall time
    ``wall_now``)."""
    ban_seconds = core.bad_peers.limits.ban_seconds
    bans = []
    for ban in core.bad_peers.current_bans(now):
        culprit = core.client_at(ban.peer_ip)
        bans.append(
            ReportedBan(
                office=ban.office,
                peer_ip=ban.peer_ip,
                device_id=culprit.device_id.hex() if culprit is not None else "",
                content_id=ban.content_id.hex,
                reporters=ban.reporters,
                since=wall_now - (now - (ban.until - ban_seconds)),
                until=wall_now + (ban.until - now),
            )
        )
    holders = [
        ReportedHolders(office, content_id.hex, tuple(devices))
        for (office, content_id), devices in core.rendezvous.current_holders(now).items()
    ]
    return bans, holders
