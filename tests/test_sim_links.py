"""The simulator's per-office link settings: asymmetric client links, WAN RTT, queue depth."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shoal_dev.sim import enterprise
from shoal_dev.sim.enterprise import SimOffice, build_enterprise
from shoal_dev.sim.network import UDP_IP_OVERHEAD, SimNetwork
from sim_recorder import Recorder

MIB = 1024 * 1024


def two_hosts(
    up_rate: float | None = None, down_rate: float | None = None, buffer_seconds: float = 0.25
) -> tuple[SimNetwork, Recorder, Recorder]:
    network = SimNetwork(seed=1)
    office = network.add_office("branch", "10.1.0.0/24", wan_rate=1e6)
    sender, receiver = Recorder(), Recorder()
    for ip, machine, rates in (
        ("10.1.0.1", sender, {"up_rate": up_rate, "buffer_seconds": buffer_seconds}),
        ("10.1.0.2", receiver, {"down_rate": down_rate}),
    ):
        host = network.add_host(office, ip, **rates)
        network.bind(host, 5000, machine)
    return network, sender, receiver


def test_an_asymmetric_link_serialises_at_its_own_rate_each_way() -> None:
    size = 972 + UDP_IP_OVERHEAD  # 1000 bytes on the wire
    network, sender, receiver = two_hosts(up_rate=10_000.0)  # 80 kbit/s up, 1 Gbit/s down
    sender.outbox.append((b"x" * 972, ("10.1.0.2", 5000)))
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=5)
    assert receiver.arrivals() == [pytest.approx(size / 10_000 + size / 125e6 + 0.0002)]
    host = network.hosts["10.1.0.1"]
    assert (host.up.rate, host.down.rate) == (10_000.0, 125e6)

    network, sender, receiver = two_hosts(down_rate=20_000.0)
    sender.outbox.append((b"x" * 972, ("10.1.0.2", 5000)))
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=5)
    assert receiver.arrivals() == [pytest.approx(size / 125e6 + size / 20_000 + 0.0002)]


@pytest.mark.parametrize(("buffer_seconds", "kept"), [(0.02, 1), (0.25, 3), (0.95, 10)])
def test_a_link_queues_its_buffer_seconds_of_traffic_then_drops(
    buffer_seconds: float, kept: int
) -> None:
    # 100 datagrams of 1000 bytes into a 10 kB/s uplink at once: the k-th kept one waits
    # k * 0.1 s in the queue, so a queue of b seconds keeps 1 + floor(b / 0.1) of them.
    network, sender, receiver = two_hosts(up_rate=10_000.0, buffer_seconds=buffer_seconds)
    for _ in range(100):
        sender.outbox.append((b"y" * 972, ("10.1.0.2", 5000)))
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=60)
    assert len(receiver.received) == kept
    assert network.hosts["10.1.0.1"].up.datagrams_dropped == 100 - kept


def test_an_office_spec_sets_its_links_and_its_defaults_do_not_move(tmp_path: Path) -> None:
    tuned = SimOffice(
        "Branch",
        "10.1.0.0/24",
        2,
        wan_rate=100e6 / 8,
        client_up_rate=20e6 / 8,
        client_down_rate=100e6 / 8,
        wan_rtt=0.1,
        buffer_seconds=1.0,
    )
    plain = SimOffice("Plain", "10.2.0.0/24", 2)
    enterprise = build_enterprise(tmp_path, [tuned, plain], package_size=MIB)
    offices = enterprise.network.offices
    branch = offices["Branch"]
    assert (branch.wan_down.delay, branch.wan_up.delay) == (0.05, 0.05)
    assert (branch.wan_down.buffer_seconds, branch.wan_up.buffer_seconds) == (1.0, 1.0)
    for host in branch.hosts.values():
        assert (host.up.rate, host.down.rate) == (20e6 / 8, 100e6 / 8)
        assert (host.up.buffer_seconds, host.down.buffer_seconds) == (1.0, 1.0)
    plain_office = offices["Plain"]
    assert (plain_office.wan_down.delay, plain_office.wan_down.buffer_seconds) == (0.01, 0.25)
    for host in plain_office.hosts.values():
        assert (host.up.rate, host.down.rate, host.up.buffer_seconds) == (125e6, 125e6, 0.25)
    # And the bounds follow the links: 2 clients, 1 MiB, WAN 100 Mbit/s, 20 up:
    # F / C_wan = 0.084 s, (N - 1) F / sum_u = 8,388,608 / 40e6 = 0.210 s.
    bound = tuned.one_copy_bound(MIB)
    assert (bound.binding, bound.seconds) == ("uplinks", pytest.approx(0.2097, abs=1e-4))
    # Kumar-Ross: 2 F / (100e6 + 40e6) = 0.120 s.
    assert tuned.kumar_ross_bound(MIB).seconds == pytest.approx(0.1198, abs=1e-4)


def test_a_package_of_256_mib_or_more_is_drawn_in_pieces_as_one_call_draws_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ``randbytes`` of 256 MiB overflows (2**31 bits); the pieces give its bytes and leave
    # the generator where one call would, so smaller cells keep their packages and keys.
    monkeypatch.setattr(enterprise, "PACKAGE_PIECE", 1024)
    for size in (0, 7, 1024, 3 * 1024 + 5):
        pieces, whole = random.Random(3), random.Random(3)
        assert enterprise.random_package(pieces, size) == whole.randbytes(size)
        assert pieces.random() == whole.random()
