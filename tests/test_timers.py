"""Time always moves: no machine's timer stays due after its ``handle_timer``.

Every sans-I/O machine (transfer engines, discovery, the control client and server,
the agent, the server node) says when it next needs time with ``get_timer()``. A
deadline at or before ``now`` that ``handle_timer(now)`` leaves in place fires again at
the same instant, forever: a busy event loop in a real process, a simulation that stops
at one virtual instant. Here every machine of a simulated enterprise is watched while
it goes through realistic states (slow asymmetric client links, a rendezvous point
that dies, a corrupting peer, a WiFi office, a VPN office, a bandwidth cap, a new
assignment): after each timer that fired at its deadline, the shell's cycle
(``handle_timer``, the application's ``poll``, ``datagrams_to_send``) must leave
``get_timer()`` later than ``now``, or ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.core.chunkset import ChunkSet
from shoal.protocol.swarm import ChunkPicker
from shoal.server import control as server_control
from shoal.server.core import BandwidthLimit
from shoal.store.content_store import ContentStore
from shoal.wire.control import LeaseDecision
from shoal_dev.lab.faults import CorruptingStore
from shoal_dev.sim.enterprise import Enterprise, SimOffice, build_enterprise
from shoal_dev.sim.network import Host, SimNetwork, TimeStoodStill

MIB = 1024 * 1024


class TimerAudit:
    """Wraps a machine (or an application): records every timer left due after firing."""

    def __init__(self, inner: Any, name: str, stuck: list[str], fired: dict[str, int]) -> None:
        self.inner = inner
        self.name = name
        self.stuck = stuck
        self.fired = fired
        self._fired_at: float | None = None

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.inner.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        return self.inner.datagrams_to_send(now)  # type: ignore[no-any-return]

    def poll(self, now: float) -> None:
        self.inner.poll(now)

    def has_events(self) -> bool:
        return bool(self.inner.has_events())

    def handle_timer(self, now: float) -> None:
        due = self.inner.get_timer()
        self.inner.handle_timer(now)
        if due is not None and due <= now:
            self._fired_at = now
            kind = type(self.inner).__name__
            self.fired[kind] = self.fired.get(kind, 0) + 1

    def get_timer(self) -> float | None:
        deadline: float | None = self.inner.get_timer()
        fired_at, self._fired_at = self._fired_at, None
        if fired_at is not None and deadline is not None and deadline <= fired_at:
            self.stuck.append(f"{self.name} ({type(self.inner).__name__}) at {fired_at:.6f}")
        return deadline


def audit(network: SimNetwork, stuck: list[str], fired: dict[str, int]) -> None:
    """Wrap every machine and application of every host (before anything runs)."""
    for host in network.hosts.values():
        audit_host(host, stuck, fired)
        network.pump(host)


def audit_host(host: Host, stuck: list[str], fired: dict[str, int]) -> None:
    host.machines = {
        port: TimerAudit(machine, f"{host.ip}:{port}", stuck, fired)
        for port, machine in host.machines.items()
    }
    if host.application is not None:
        host.application = TimerAudit(host.application, f"{host.ip} app", stuck, fired)
    host.armed.clear()


def slow_links(enterprise: Enterprise, up_mbit: float, down_mbit: float) -> None:
    for client in enterprise.clients:
        client.host.up.rate = up_mbit * 1e6 / 8
        client.host.down.rate = down_mbit * 1e6 / 8


def run_audited(enterprise: Enterprise, until: float, stop: Any = None) -> dict[str, int]:
    stuck: list[str] = []
    fired: dict[str, int] = {}
    audit(enterprise.network, stuck, fired)
    enterprise.run(until=until, stop=stop or enterprise.all_complete)
    assert not stuck, f"timers left due by handle_timer: {stuck[:5]} ({len(stuck)} in all)"
    return fired


def test_slow_asymmetric_client_links(tmp_path: Path) -> None:
    """The case that stopped at one instant: held-back chunks behind full peers."""
    enterprise = build_enterprise(
        tmp_path,
        [SimOffice("Branch", "10.1.0.0/24", 8, wan_rate=100e6 / 8)],
        package_size=4 * MIB,
        chunk_size=MIB,
        checkin_seconds=60,
    )
    slow_links(enterprise, 20, 100)
    fired = run_audited(enterprise, until=60)
    assert enterprise.all_complete()
    # The audit saw the machines' timers fire (it would prove nothing otherwise).
    for kind in ("AgentCore", "TransferEngine", "DiscoveryMachine", "ControlClient"):
        assert fired.get(kind, 0) > 0, f"no {kind} timer fired"


def test_rendezvous_death_corrupt_peer_and_bandwidth_cap(tmp_path: Path) -> None:
    def store(directory: Path, number: int) -> ContentStore:
        kind = CorruptingStore if number == 1 else ContentStore
        return kind(directory, durable=False)

    enterprise = build_enterprise(
        tmp_path,
        [
            SimOffice("Branch", "10.1.0.0/24", 5, wan_rate=20e6 / 8),
            SimOffice("Cafe", "10.2.0.0/24", 3, type="WiFi"),
            SimOffice("Remote", "10.3.0.0/24", 2, type="VPN"),
        ],
        package_size=2 * MIB,
        chunk_size=256 * 1024,
        store_factory=store,
        bandwidth={"Cafe": BandwidthLimit(foreground_kbps=8000)},
    )
    slow_links(enterprise, 10, 50)
    stuck: list[str] = []
    fired: dict[str, int] = {}
    audit(enterprise.network, stuck, fired)

    def rendezvous_busy() -> bool:
        for client in enterprise.clients:
            download = enterprise.download_of(client)
            if (
                download is not None
                and client.office == "Branch"
                and download.source is LeaseDecision.GRANTED
                and download.bytes_from_server > MIB // 2
            ):
                enterprise.network.kill(client.host)
                return True
        return False

    enterprise.run(until=60, stop=rendezvous_busy)
    enterprise.run(until=120, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    assert enterprise.server.core.rendezvous.takeovers >= 1
    assert not stuck, f"timers left due by handle_timer: {stuck[:5]} ({len(stuck)} in all)"


def test_a_new_assignment_nudges_through_the_server_control(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_control, "NUDGES_PER_ROUND", 8)  # rounds, on a timer
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 40)], package_size=256 * 1024
    )
    stuck: list[str] = []
    fired: dict[str, int] = {}
    audit(enterprise.network, stuck, fired)
    enterprise.run(until=30, stop=enterprise.all_complete)
    server = enterprise.server
    # Same assignments, a new document: the server nudges its 40 clients in rounds.
    server.core.set_assignments(
        enterprise.signed_assignments(
            [
                {
                    "id": 1,
                    "content_id": enterprise.content_id.hex,
                    "target_kind": "everyone",
                    "target": None,
                    "offices": None,
                    "background": False,
                }
            ]
        )
    )
    network = enterprise.network
    network.pump(network.hosts["10.0.0.2"])
    network.run(until=network.now + 10)
    assert server.control.counters.nudges_sent == 40
    assert fired.get("ServerControl", 0) > 0, "the nudges went without a timer"
    assert not stuck, f"timers left due by handle_timer: {stuck[:5]} ({len(stuck)} in all)"


def test_a_held_back_chunk_wakes_the_picker_once() -> None:
    """The deadline of a chunk held back for its source's fan-out passes while the source
    is at its in-flight cap: ``next_wake`` must not keep returning it."""
    me, source = ("10.0.0.99", 0), ("10.0.0.1", 0)
    picker: ChunkPicker[tuple[str, int]] = ChunkPicker(
        ChunkSet(64), max_in_flight_per_peer=1, me=me, fanout=1, fanout_grace=0.5
    )
    picker.peer_has(source, ChunkSet.full(64))
    for number in range(2, 17):  # 15 other downloaders: most chunks are theirs to fetch
        picker.peer_has((f"10.0.0.{number}", 0), ChunkSet(64))
    first = picker.next_requests(now=0.0)
    assert len(first) == 1  # one of ours, after holding back theirs
    deadline = picker.next_wake()
    assert deadline is not None, "nothing was held back: the test proves nothing"
    assert picker.next_requests(now=deadline) == []  # the source is at its cap
    picker.wake(deadline)
    later = picker.next_wake()
    assert later is None or later > deadline
    # The held-back chunks go as soon as the source has room again.
    (asked,) = first
    picker.received(asked[1], source)
    assert picker.next_requests(now=deadline + 0.01)


def test_the_simulator_names_a_timer_that_never_lets_time_move() -> None:
    class Stuck:
        def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
            pass

        def handle_timer(self, now: float) -> None:
            pass

        def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
            return []

        def get_timer(self) -> float | None:
            return 1.0

    network = SimNetwork()
    office = network.add_office("branch", "10.1.0.0/24", wan_rate=1e6)
    host = network.add_host(office, "10.1.0.5")
    network.bind(host, 7000, Stuck())
    with pytest.raises(TimeStoodStill, match=r"10\.1\.0\.5 port 7000 \(Stuck\)") as raised:
        network.run(until=5)
    assert raised.value.instant == 1.0
