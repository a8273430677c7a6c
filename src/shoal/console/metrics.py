"""The console's Prometheus metrics, read from its database at each scrape.

Every figure comes from SQL (what the P2P servers reported, the licence, the change
feed), so it is right whichever console process answers the scrape and after a restart.
Bytes from peers and from servers are the servers' download statistics, per office and
content, summed over servers: the same rows the console's reports show.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from shoal import __version__
from shoal.console import db
from shoal.console.state import ConsoleState
from shoal.core.savings import SAVINGS_HELP, savings_by_office


class ConsoleCollector(Collector):
    """``shoal_console_*`` and ``shoal_licence_*`` metrics of one console."""

    def __init__(self, state: ConsoleState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        now = state.clock()
        info = GaugeMetricFamily(
            "shoal_console_info", "This console (always 1)", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        with state.sessions() as session:
            stats = session.execute(
                select(
                    db.DownloadStat.office,
                    db.DownloadStat.content_id,
                    func.sum(db.DownloadStat.bytes_from_peers),
                    func.sum(db.DownloadStat.bytes_from_server),
                )
                .group_by(db.DownloadStat.office, db.DownloadStat.content_id)
                .order_by(db.DownloadStat.office, db.DownloadStat.content_id)
            ).all()
            licence = state.licence_status(session)
            window = now - timedelta(seconds=state.config.online_window_seconds)
            all_devices = dict(
                session.execute(
                    select(db.Device.licensed, func.count()).group_by(db.Device.licensed)
                ).all()
            )
            online_devices = dict(
                session.execute(
                    select(db.Device.licensed, func.count())
                    .where(db.Device.last_seen >= window)
                    .group_by(db.Device.licensed)
                ).all()
            )
            servers = session.execute(
                select(db.Server.name, db.Server.id, db.Server.version, db.Server.last_seen)
            ).all()
            feed_seq = session.scalar(select(func.max(db.Change.seq))) or 0
            downloads = session.execute(
                select(db.DeviceContent.complete, func.count()).group_by(db.DeviceContent.complete)
            ).all()

        peers = GaugeMetricFamily(
            "shoal_console_bytes_from_peers",
            "Bytes devices received from peers in their office (servers' reports), per "
            "office and content",
            labels=["office", "content_id"],
        )
        from_servers = GaugeMetricFamily(
            "shoal_console_bytes_from_servers",
            "Bytes devices received from P2P servers (over the WAN), per office and content",
            labels=["office", "content_id"],
        )
        by_office: list[tuple[str, int, int]] = []
        for office, content_id, from_peers, from_server in stats:
            peers.add_metric([office, content_id], int(from_peers or 0))
            from_servers.add_metric([office, content_id], int(from_server or 0))
            by_office.append((office, int(from_peers or 0), int(from_server or 0)))
        yield peers
        yield from_servers
        savings = GaugeMetricFamily(
            "shoal_console_wan_savings_ratio", SAVINGS_HELP, labels=["office"]
        )
        for office, ratio in savings_by_office(by_office):
            savings.add_metric([office], ratio)
        yield savings

        used = GaugeMetricFamily("shoal_licence_seats_used", "Licence seats in use (devices)")
        used.add_metric([], licence.seats_used)
        yield used
        purchased = GaugeMetricFamily("shoal_licence_seats_purchased", "Seats of the licence")
        purchased.add_metric([], licence.seats)
        yield purchased
        over = GaugeMetricFamily("shoal_licence_seats_over", "Seats used beyond the licence")
        over.add_metric([], licence.seats_over)
        yield over
        days = GaugeMetricFamily("shoal_licence_days_left", "Days until the licence expires")
        days.add_metric([], licence.days_left if licence.days_left is not None else 0)
        yield days

        device_gauge = GaugeMetricFamily(
            "shoal_console_devices",
            "Devices known, by licensed and online (checked in within the online window)",
            labels=["licensed", "online"],
        )
        for licensed in (True, False):
            online = online_devices.get(licensed, 0)
            offline = all_devices.get(licensed, 0) - online
            for is_online, count in ((True, online), (False, offline)):
                device_gauge.add_metric([str(licensed).lower(), str(is_online).lower()], count)
        yield device_gauge
        transfers = GaugeMetricFamily(
            "shoal_console_downloads",
            "Content held by devices, complete or in progress (servers' reports)",
            labels=["state"],
        )
        for complete, count in downloads:
            transfers.add_metric(["complete" if complete else "in_progress"], count)
        yield transfers
        seen = GaugeMetricFamily(
            "shoal_console_server_last_seen_seconds",
            "Seconds since each P2P server last talked to the console",
            labels=["server", "server_id", "version"],
        )
        for name, server_id, version, last_seen in servers:
            seen.add_metric([name, server_id, version], (now - last_seen).total_seconds())
        yield seen
        feed = CounterMetricFamily(
            "shoal_console_feed_changes", "Changes written to the feed P2P servers follow"
        )
        feed.add_metric([], feed_seq)
        yield feed
