"""The simulator's network: timing, WAN accounting, broadcast domains, determinism."""

from __future__ import annotations

import pytest

from shoal_dev.sim.network import UDP_IP_OVERHEAD, Address, SimNetwork
from sim_recorder import Recorder


def build() -> tuple[SimNetwork, dict[str, Recorder]]:
    network = SimNetwork(seed=1)
    central = network.add_office("central", "10.0.0.0/24", wan_rate=1e9, wan_delay=0.0)
    branch = network.add_office("branch", "10.1.0.0/24", wan_rate=1e6, wan_delay=0.02)
    recorders = {}
    for office, ip in ((central, "10.0.0.1"), (branch, "10.1.0.1"), (branch, "10.1.0.2")):
        host = network.add_host(office, ip)
        recorders[ip] = Recorder()
        network.bind(host, 5000, recorders[ip])
    return network, recorders


def send(
    network: SimNetwork, recorders: dict[str, Recorder], ip: str, data: bytes, destination: Address
) -> None:
    recorders[ip].outbox.append((data, destination))
    network.pump(network.hosts[ip])


def test_a_wan_crossing_takes_serialisation_plus_delay_and_is_counted() -> None:
    network, recorders = build()
    send(network, recorders, "10.0.0.1", b"x" * 972, ("10.1.0.1", 5000))
    network.run(until=10)
    ((_, source, arrived),) = recorders["10.1.0.1"].received
    assert source == ("10.0.0.1", 5000)
    size = 972 + UDP_IP_OVERHEAD
    assert arrived == pytest.approx(size / 1e6 + 0.02, abs=0.002)
    assert network.offices["branch"].wan_down.bytes_sent == size


def test_broadcast_stays_in_the_office_and_skips_the_sender() -> None:
    network, recorders = build()
    send(network, recorders, "10.1.0.1", b"who-has", ("10.1.0.255", 5000))
    network.run(until=1)
    assert [data for data, _, _ in recorders["10.1.0.2"].received] == [b"who-has"]
    assert recorders["10.1.0.1"].received == []
    assert recorders["10.0.0.1"].received == []
    assert network.offices["branch"].wan_up.bytes_sent == 0


def test_a_full_queue_drops_and_a_run_is_deterministic() -> None:
    def run_once() -> tuple[int, list[float]]:
        network, recorders = build()
        for _ in range(400):  # 400 KB into a 1 MB/s link with a 0.25 s buffer
            send(network, recorders, "10.0.0.1", b"y" * 972, ("10.1.0.1", 5000))
        network.run(until=10)
        return network.offices["branch"].wan_down.datagrams_dropped, [
            now for _, _, now in recorders["10.1.0.1"].received
        ]

    first, second = run_once(), run_once()
    assert first == second
    dropped, arrivals = first
    assert 100 < dropped < 200
    assert len(arrivals) == 400 - dropped


# -- ICMP port unreachable ---------------------------------------------------------------


class Uploader(Recorder):
    """A recorder that, like a transfer engine, can end its uploads to a peer."""

    def __init__(self) -> None:
        super().__init__()
        self.abandoned: list[Address] = []

    def abandon_peer(self, peer: Address) -> int:
        self.abandoned.append(peer)
        return 1


def build_with_uploader() -> tuple[SimNetwork, dict[str, Recorder], Uploader]:
    network, recorders = build()
    uploader = Uploader()
    network.bind(network.hosts["10.0.0.1"], 6000, uploader)
    return network, recorders, uploader


def test_a_datagram_to_a_port_nothing_listens_on_is_answered_port_unreachable() -> None:
    network, _, uploader = build_with_uploader()
    uploader.outbox.append((b"x" * 972, ("10.1.0.1", 7777)))
    network.pump(network.hosts["10.0.0.1"])
    network.run(until=10)
    assert uploader.abandoned == [("10.1.0.1", 7777)]
    assert network.icmp.sent == 1
    assert network.unreachable.ports_closed == 1
    assert network.unreachable.uploads_abandoned == 1
    # The error crossed the WAN back: headers and the quoted datagram (at most 576 bytes).
    assert network.offices["branch"].wan_up.bytes_sent == 576


def test_a_dead_hosts_port_answers_unreachable_and_the_live_ones_answer_nothing() -> None:
    network, recorders, uploader = build_with_uploader()
    network.kill(network.hosts["10.1.0.1"])
    uploader.outbox += [(b"to the dead", ("10.1.0.1", 5000)), (b"to the live", ("10.1.0.2", 5000))]
    network.pump(network.hosts["10.0.0.1"])
    network.run(until=10)
    assert uploader.abandoned == [("10.1.0.1", 5000)]
    assert recorders["10.1.0.2"].received[0][0] == b"to the live"
    assert network.icmp.sent == 1


def test_an_error_reaching_a_machine_that_cannot_abandon_is_counted_only() -> None:
    network, recorders = build()
    send(network, recorders, "10.0.0.1", b"x", ("10.1.0.1", 7777))
    network.run(until=10)
    assert network.unreachable.ports_closed == 1
    assert network.unreachable.uploads_abandoned == 0


def test_broadcasts_and_unknown_addresses_get_no_icmp_answer() -> None:
    network, _, uploader = build_with_uploader()
    network.add_host(network.offices["central"], "10.0.0.2")  # nothing bound on 7777
    uploader.outbox += [(b"who has", ("10.0.0.255", 7777)), (b"lost", ("10.9.9.9", 5000))]
    network.pump(network.hosts["10.0.0.1"])
    network.run(until=10)
    assert uploader.abandoned == []
    assert network.icmp.sent == 0


def test_icmp_errors_are_rate_limited_per_destination_as_linux_does() -> None:
    network, _, uploader = build_with_uploader()
    uploader.outbox += [(b"x", ("10.1.0.1", 7777))] * 10
    network.pump(network.hosts["10.0.0.1"])
    network.run(until=1)
    assert (network.icmp.sent, network.icmp.rate_limited) == (6, 4)  # a burst of 6
    uploader.outbox += [(b"x", ("10.1.0.1", 7777))] * 3
    network.pump(network.hosts["10.0.0.1"])
    network.run(until=10)
    assert network.icmp.sent == 7  # about one token came back in that second
