"""The simulator's pump window: inputs to a host pumped together, as a runner's loop turn."""

from __future__ import annotations

import math

import pytest

from shoal_dev.sim.network import SimNetwork
from sim_recorder import Recorder


class Reader:
    """An application that reads its inbox in each poll and says when, and how much."""

    def __init__(self, inbox: Recorder) -> None:
        self.inbox = inbox
        self.polls: list[tuple[float, int]] = []

    def poll(self, now: float) -> None:
        self.polls.append((now, len(self.inbox.received)))
        self.inbox.received.clear()

    def handle_timer(self, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def has_events(self) -> bool:
        return bool(self.inbox.received)


def three_senders_one_reader(window: float | None) -> tuple[SimNetwork, list[Recorder], Reader]:
    """Three hosts and a reader whose downlink adds no serialisation: what the three
    send at one instant reaches the reader at one instant."""
    network = SimNetwork(seed=1, pump_window=window)
    office = network.add_office("branch", "10.1.0.0/24", wan_rate=1e6)
    reader_host = network.add_host(office, "10.1.0.9", down_rate=math.inf)
    reader_inbox = Recorder()
    network.bind(reader_host, 5000, reader_inbox)
    reader = Reader(reader_inbox)
    network.attach(reader_host, reader)
    reader.polls.clear()
    senders = []
    for number in range(1, 4):
        host = network.add_host(office, f"10.1.0.{number}")
        inbox = Recorder()
        network.bind(host, 5000, inbox)
        senders.append(inbox)
    return network, senders, reader


def send_all(network: SimNetwork, senders: list[Recorder]) -> None:
    for number, inbox in enumerate(senders, start=1):
        inbox.outbox.append((b"x" * 100, ("10.1.0.9", 5000)))
        network.pump(network.hosts[f"10.1.0.{number}"])


def test_without_a_window_each_datagram_is_its_own_pump() -> None:
    network, senders, reader = three_senders_one_reader(None)
    send_all(network, senders)
    network.run(until=1)
    assert [count for _, count in reader.polls] == [1, 1, 1]
    assert len({when for when, _ in reader.polls}) == 1  # one instant


def test_a_zero_window_reads_one_instants_datagrams_in_one_poll_at_that_instant() -> None:
    network, senders, reader = three_senders_one_reader(None)
    send_all(network, senders)
    network.run(until=1)
    arrival = reader.polls[0][0]

    network, senders, reader = three_senders_one_reader(0.0)
    send_all(network, senders)
    network.run(until=1)
    assert reader.polls == [(arrival, 3)]


def test_a_window_pumps_an_instant_at_once_and_what_follows_at_the_windows_end() -> None:
    network, senders, reader = three_senders_one_reader(0.001)
    send_all(network, senders)
    network.run(until=1, stop=lambda: bool(reader.polls))
    [(arrival, count)] = reader.polls
    assert count == 3
    # 0.2 ms later it arrives, inside the window: read when the window ends.
    send_all(network, senders[:1])
    network.run(until=1)
    assert reader.polls[1] == (pytest.approx(arrival + 0.001), 1)
    # After the window: at its own instant again.
    send_all(network, senders[:1])
    network.run(until=2)
    assert reader.polls[2] == (pytest.approx(1.0002, abs=1e-5), 1)
