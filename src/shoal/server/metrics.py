"""The P2P server's Prometheus metrics, read from its live state at each scrape.

A custom collector rather than counters incremented in the protocol code: the machines
already count everything (``TransferCounters``, ``ServerControlCounters``, the core's
registry), so a scrape reads them, and the sans-I/O code stays free of a metrics library.
It runs on the event loop thread (``metrics_listener``), the only one that touches them.

Bytes from peers and from the server come from the clients' check-ins (what each device
says it received, per content), summed per office: the figures the console shows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal import __version__
from shoal.core.savings import SAVINGS_HELP, savings_by_office

if TYPE_CHECKING:
    from shoal.server.service import ServerService


class ServerCollector(Collector):
    """``shoal_server_*`` metrics of one ``ServerService``."""

    def __init__(self, service: ServerService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        core = service.core
        now = time.monotonic()
        info = GaugeMetricFamily(
            "shoal_server_info", "This P2P server (always 1)", labels=["version", "server_id"]
        )
        info.add_metric([__version__, service.server_id], 1)
        yield info

        peers = GaugeMetricFamily(
            "shoal_server_bytes_from_peers",
            "Bytes devices received from peers in their office, per office and content "
            "(from check-ins of the devices in the registry)",
            labels=["office", "content_id"],
        )
        server = GaugeMetricFamily(
            "shoal_server_bytes_from_server",
            "Bytes devices received from this server (over the WAN), per office and content",
            labels=["office", "content_id"],
        )
        by_office: list[tuple[str, int, int]] = []
        for (content_id, office), (from_peers, from_server) in sorted(
            core.download_statistics().items(), key=lambda item: (item[0][1], item[0][0].hex)
        ):
            label = office or "(no office)"
            peers.add_metric([label, content_id.hex], from_peers)
            server.add_metric([label, content_id.hex], from_server)
            by_office.append((label, from_peers, from_server))
        yield peers
        yield server
        savings = GaugeMetricFamily(
            "shoal_server_wan_savings_ratio", SAVINGS_HELP, labels=["office"]
        )
        for office, ratio in savings_by_office(by_office):
            savings.add_metric([office], ratio)
        yield savings

        clients = GaugeMetricFamily("shoal_server_clients", "Devices in the registry")
        clients.add_metric([], len(core.clients))
        yield clients
        requests = CounterMetricFamily(
            "shoal_server_control_requests",
            "Authenticated control requests admitted, per kind (CheckIn = check-ins, "
            "Lease = rendezvous lease requests)",
            labels=["kind"],
        )
        for kind, count in sorted(core.requests_handled.items()):
            requests.add_metric([kind], count)
        yield requests
        refusals = CounterMetricFamily(
            "shoal_server_refusals",
            "Requests refused, per cause (version, licence, key, ban, outside office...)",
            labels=["cause"],
        )
        for cause, count in sorted(core.refusals_sent.items(), key=lambda item: item[0].name):
            refusals.add_metric([cause.name.lower()], count)
        yield refusals
        leases = GaugeMetricFamily(
            "shoal_server_leases_held", "Rendezvous leases held now (one per office and content)"
        )
        leases.add_metric([], core.rendezvous.held(now))
        yield leases
        takeovers = CounterMetricFamily(
            "shoal_server_lease_takeovers", "Leases given to another device (holder silent)"
        )
        takeovers.add_metric([], core.rendezvous.takeovers)
        yield takeovers
        held_back = CounterMetricFamily(
            "shoal_server_chunks_held_back",
            "Chunk requests refused because the office already holds the chunk (delivered "
            "to a client still there): a second WAN copy not sent",
        )
        held_back.add_metric([], core.deliveries.refused)
        yield held_back
        bans = CounterMetricFamily("shoal_server_bans", "Peers banned in their office")
        bans.add_metric([], core.bad_peers.bans_total)
        yield bans
        reported = GaugeMetricFamily(
            "shoal_server_bad_peer_reporters",
            "Devices that reported a peer of their office for bad chunks, per office and "
            "peer IP (the reports kept; enough reporters ban the peer)",
            labels=["office", "peer"],
        )
        for (office, peer_ip), count in sorted(core.bad_peers.reporters().items()):
            reported.add_metric([office, peer_ip], count)
        yield reported

        yield from self._transfers()

        lag = GaugeMetricFamily(
            "shoal_server_feed_lag_seconds",
            "Seconds since the console's change feed was last read in full (grows while "
            "the console cannot be reached)",
        )
        lag.add_metric([], now - (service.last_synced or service.started_at))
        yield lag
        failures = CounterMetricFamily(
            "shoal_server_console_sync_failures", "Rounds with the console that failed"
        )
        failures.add_metric([], service.sync_failures)
        yield failures
        licence = core.licence
        seats_over = GaugeMetricFamily(
            "shoal_server_licence_seats_over", "Seats assigned beyond the licence (console's)"
        )
        seats_over.add_metric([], licence.seats_over)
        yield seats_over
        active = GaugeMetricFamily("shoal_server_activated", "1 when the console activated us")
        active.add_metric([], 1 if licence.active else 0)
        yield active

    def _transfers(self) -> Iterator[Metric]:
        node = self.service.node
        if node is None:
            return
        families = {
            "data_packets_sent": "Data packets sent to devices",
            "data_packets_retransmitted": "Data packets sent again (loss or timeout)",
            "payload_bytes_sent": "Content bytes sent to devices",
            "datagrams_received": "Datagrams received on the data ports",
        }
        for field, description in families.items():
            family = CounterMetricFamily(
                f"shoal_server_transfer_{field}", description, labels=["mode"]
            )
            for mode, engine in node.engines.items():
                family.add_metric([mode.name.lower()], getattr(engine.counters, field))
            yield family
