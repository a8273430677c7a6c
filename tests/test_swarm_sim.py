"""The swarm on a simulated enterprise: real agents, server and stores, virtual clock."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from shoal import ports
from shoal.client.agent import AgentCore, DownloadState
from shoal.core.chunkset import ChunkSet
from shoal.core.packing import pack_bytes
from shoal.protocol.discovery import DiscoveryConfig, DiscoveryMachine
from shoal.protocol.transfer import ChunkRequested, RefusalReason, TransferEngine
from shoal.server.core import BandwidthLimit
from shoal.store.content_store import ContentStore
from shoal.wire.control import LeaseDecision
from shoal_dev.lab.faults import CorruptingStore
from shoal_dev.sim.enterprise import (
    SERVER_IP,
    Enterprise,
    SimClient,
    SimOffice,
    build_enterprise,
    file_sha256,
)

MIB = 1024 * 1024


CONTROL_BYTES_PER_DEVICE = 4096


def assert_everyone_has_the_package(enterprise: Enterprise) -> None:
    expected = hashlib.sha256(enterprise.package).hexdigest()
    for client in enterprise.clients:
        if client.host.alive:
            assert enterprise.complete(client), f"{client.host.ip} did not complete"
            assert file_sha256(client.store, enterprise.content_id) == expected


@pytest.mark.slow  # ~15 s: twelve clients, 4 MiB
def test_an_office_pulls_the_package_over_the_wan_once(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 12)], package_size=4 * MIB
    )
    enterprise.run(until=60, stop=enterprise.all_complete)
    assert_everyone_has_the_package(enterprise)
    # The package once (with the datagrams' headers), plus what every device says with
    # its server whatever the package's size: certificate, registration, check-ins, the
    # signed assignment document and the manifest (about 3.5 KiB per device here).
    control = CONTROL_BYTES_PER_DEVICE * len(enterprise.clients)
    assert enterprise.wan_bytes_down("Branch") <= 1.05 * enterprise.manifest.size + control
    from_server = [enterprise.download_of(c).bytes_from_server for c in enterprise.clients]
    assert sum(from_server) == enterprise.manifest.size  # each chunk once, by one holder
    # Six clients (``DEFAULT_STRIPES``) each brought their own stripe in. (The group's
    # leases are not read at the end: each holder frees its own as it completes, so
    # whether they are all gone at the last client's completion is an ordering detail.)
    assert len([fetched for fetched in from_server if fetched]) == 6
    assert max(from_server) < enterprise.manifest.size / 3


def test_vpn_offices_and_unknown_networks_use_the_server_only(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path,
        [
            SimOffice("Remote", "10.3.0.0/24", 3, type="VPN"),
            SimOffice("Unlisted", "10.7.0.0/24", 2, in_topology=False),
        ],
        package_size=1 * MIB,
    )
    enterprise.run(until=60, stop=enterprise.all_complete)
    assert_everyone_has_the_package(enterprise)
    for client in enterprise.clients:
        download = enterprise.download_of(client)
        assert download.source is LeaseDecision.DIRECT
        assert (download.bytes_from_peers, download.bytes_from_server) == (
            0,
            enterprise.manifest.size,
        )
        assert client.agent.counters.chunks_served == 0


def test_a_corrupting_peer_is_banned_reported_and_the_others_complete(tmp_path: Path) -> None:
    def store(directory: Path, number: int) -> ContentStore:
        kind = CorruptingStore if number == 0 else ContentStore
        return kind(directory, durable=False)

    enterprise = build_enterprise(
        tmp_path,
        [SimOffice("Branch", "10.1.0.0/24", 6)],
        package_size=2 * MIB,
        store_factory=store,
    )
    enterprise.run(until=60, stop=enterprise.all_complete)
    liar = enterprise.clients[0].host.ip
    honest = enterprise.clients[1:]
    expected = hashlib.sha256(enterprise.package).hexdigest()
    for client in honest:
        assert enterprise.complete(client)
        assert file_sha256(client.store, enterprise.content_id) == expected
    reports = enterprise.server.core.bad_peers.reports
    assert reports, "nobody reported the corrupting peer"
    assert {report.peer[0] for report in reports} == {liar}
    assert any(liar in enterprise.download_of(c).banned for c in honest)


def test_the_rendezvous_point_dies_and_another_takes_over(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 6)], package_size=4 * MIB
    )

    def holder_midway() -> SimClient | None:
        """A holder that has fetched part of its stripe from the server, not all of it."""
        for client in enterprise.clients:
            download = enterprise.download_of(client)
            if (
                download is not None
                and download.source is LeaseDecision.GRANTED
                and download.bytes_from_server >= 256 * 1024
            ):
                return client
        return None

    enterprise.run(until=60, stop=lambda: holder_midway() is not None)
    first = holder_midway()
    assert first is not None
    stripes = enterprise.server.core.rendezvous.stripes("Branch", enterprise.content_id)
    stripe_bytes = enterprise.manifest.size // stripes
    assert enterprise.download_of(first).bytes_from_server < stripe_bytes  # midway
    enterprise.network.kill(first.host)
    enterprise.run(until=120, stop=enterprise.all_complete)
    assert_everyone_has_the_package(enterprise)
    assert enterprise.server.core.rendezvous.takeovers >= 1  # its stripe moved
    # The new holder of that stripe resumed from the chunks already in the office.
    # What the server had in flight to the dead host (a queue's worth) is lost.
    assert enterprise.wan_bytes_down("Branch") <= 1.25 * enterprise.manifest.size


def test_a_restarted_client_resumes_without_fetching_verified_chunks(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 1)], package_size=4 * MIB
    )
    (client,) = enterprise.clients

    def far_enough() -> bool:
        return (
            enterprise.content_id in client.store
            and len(client.store.verified(enterprise.content_id)) >= 20
        )

    enterprise.run(until=60, stop=far_enough)
    network = enterprise.network
    network.kill(client.host)
    held: ChunkSet = client.store.verified(enterprise.content_id)
    client.store.close()  # type: ignore[attr-defined]
    reopened = ContentStore(tmp_path / f"client-{client.host.ip}", durable=False)
    agent = AgentCore(client.agent.config, reopened, network.now)
    network.run(until=network.now + 0.5)
    network.restart(client.host, agent.bindings(), agent)
    client.agent, client.store = agent, reopened
    enterprise.run(until=120, stop=enterprise.all_complete)
    assert_everyone_has_the_package(enterprise)
    fetched_after_restart = agent.downloads[enterprise.content_id].bytes_from_server
    missing = sum(enterprise.manifest.chunk_length(i) for i in held.missing())
    assert fetched_after_restart == missing


def test_an_office_bandwidth_cap_reaches_its_clients_and_holds(tmp_path: Path) -> None:
    size = 2 * MIB
    capped = build_enterprise(
        tmp_path / "capped",
        [SimOffice("Branch", "10.1.0.0/24", 1, wan_rate=10e6)],
        package_size=size,
        bandwidth={"Branch": BandwidthLimit(foreground_kbps=4000)},
    )
    capped.run(until=120, stop=capped.all_complete)
    assert_everyone_has_the_package(capped)
    (client,) = capped.clients
    download = capped.download_of(client)
    elapsed = download.completed_at - download.started_at
    # 4000 kbit/s = 500 kB/s: 2 MiB needs ~4.2 s; uncapped, the 10 MB/s WAN takes ~0.2 s.
    assert elapsed >= 0.9 * (size - 131_072) / 500_000
    assert "foreground 4000 kbit/s" in client.agent.server_note


class BoastingPeer:
    """Answers every query with "I hold it all", then refuses every chunk request."""

    def __init__(self, engine: TransferEngine) -> None:
        self.engine = engine
        self.refused = 0

    def poll(self, now: float) -> None:
        while (event := self.engine.next_event()) is not None:
            if isinstance(event, ChunkRequested):
                self.refused += 1
                self.engine.refuse_chunk(event.peer, event.request_id, RefusalReason.NOT_FOUND, now)

    def handle_timer(self, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def has_events(self) -> bool:
        return self.engine.has_events()


def test_a_peer_answering_for_content_it_does_not_have_is_dropped(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 2)], package_size=2 * MIB
    )
    network = enterprise.network
    host = network.add_host(network.offices["Branch"], "10.1.0.99")
    discovery = DiscoveryMachine(
        DiscoveryConfig(ports.DISCOVERY, "10.1.0.255", ("10.1.0.0/24",), ("10.1.0.99",)), 0.0
    )
    discovery.set_holding(
        enterprise.content_id, ChunkSet.full(enterprise.manifest.chunk_count), 0.0
    )
    boaster = BoastingPeer(TransferEngine(now=0.0))
    network.bind(host, ports.DISCOVERY, discovery)
    network.bind(host, ports.FOREGROUND_DATA, boaster.engine)
    network.attach(host, boaster)
    enterprise.run(until=60, stop=enterprise.all_complete)
    assert_everyone_has_the_package(enterprise)
    assert boaster.refused > 0, "nobody believed the boaster: the test proves nothing"
    for client in enterprise.clients:
        assert "10.1.0.99" not in enterprise.download_of(client).peers_used


def test_a_new_assignment_starts_at_once_not_at_the_next_check_in(tmp_path: Path) -> None:
    """The server nudges its clients when the assignments change (check-in is 60 s)."""
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 4)], package_size=MIB, checkin_seconds=60
    )
    enterprise.run(until=30, stop=enterprise.all_complete)
    assert_everyone_has_the_package(enterprise)
    network, server = enterprise.network, enterprise.server
    second = random.Random(7).randbytes(MIB)
    manifest = pack_bytes(second, 65536)
    manifest_file = enterprise.console_key.sign(manifest).encode()
    server.core.add_manifest(manifest_file)
    server.origin.add(manifest_file, pinned=True)
    for chunk_index in range(manifest.chunk_count):
        start = chunk_index * 65536
        server.origin.write_chunk(manifest.content_id, chunk_index, second[start : start + 65536])
    document = {
        "generated_at": "later",
        "assignments": [
            {
                "id": number,
                "content_id": content_id.hex,
                "target_kind": "everyone",
                "target": None,
                "offices": None,
                "background": False,
            }
            for number, content_id in enumerate((enterprise.content_id, manifest.content_id))
        ],
    }
    assigned_at = network.now
    server.core.set_assignments(enterprise.signed_assignments(document["assignments"]))
    network.pump(network.hosts[SERVER_IP])

    def everyone_has_the_second() -> bool:
        return all(
            (d := c.agent.downloads.get(manifest.content_id)) is not None
            and d.state is DownloadState.COMPLETE
            for c in enterprise.clients
        )

    finished = network.run(until=assigned_at + 30, stop=everyone_has_the_second)
    assert everyone_has_the_second(), "the clients waited for their next check-in"
    assert finished - assigned_at < 10
    assert server.control.counters.nudges_sent == 4
    for client in enterprise.clients:
        assert file_sha256(client.store, manifest.content_id) == hashlib.sha256(second).hexdigest()


def test_the_rendezvous_point_sends_each_chunk_about_once_on_slow_client_links(
    tmp_path: Path,
) -> None:
    """WiFi-class links (200 Mbit/s) cannot carry 5 copies of a 50 Mbit/s WAN stream:
    each holder hands each new chunk of its stripe to one peer, which passes it on, so
    the office's uplinks share the N-1 copies instead of one of them sending most."""
    enterprise = build_enterprise(
        tmp_path,
        [SimOffice("Cafe", "10.2.0.0/24", 6, wan_rate=50e6 / 8, nic_rate=200e6 / 8)],
        package_size=4 * MIB,
        chunk_size=256 * 1024,
    )
    enterprise.run(until=60, stop=enterprise.all_complete)
    assert_everyone_has_the_package(enterprise)
    served = [client.agent.counters.bytes_served for client in enterprise.clients]
    copies = (len(served) - 1) * enterprise.manifest.size  # N-1 copies must be sent
    assert sum(served) <= 1.15 * copies, f"{sum(served) / copies:.2f} x the copies needed"
    # No uplink sends the office's copies alone (one holder once sent 5 of them).
    assert max(served) <= 0.5 * copies, f"one client sent {max(served) / copies:.2f} of them"
