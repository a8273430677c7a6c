"""The one pump (``shoal.net.pump``) and the asyncio runner that drives it on sockets.

The simulator's side of the same pump (and its ICMP model) is in
``tests/test_sim_network.py``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from shoal.core.portable import LINUX_PATHS
from shoal.net import Address, UdpSocket
from shoal.net.pump import PORT_CLOSED, UnreachableCounters, port_unreachable, pump
from shoal.net.runner import ApplicationRunner, Binding


def in_event_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*arguments: Any, **keywords: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*arguments, **keywords), timeout=20))

    return run


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class Log:
    """One list of everything that happened, in order, across the fakes."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []


class FakeMachine:
    def __init__(self, log: Log, name: str, outbox: list[tuple[bytes, Address]]) -> None:
        self.log = log
        self.name = name
        self.outbox = outbox
        self.timer: float | None = None
        self.abandoned: list[Address] = []

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        self.log.calls.append(("receive", self.name, bytes(data)))

    def handle_timer(self, now: float) -> None:
        self.log.calls.append(("timer", self.name))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self.log.calls.append(("asked", self.name))
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.timer

    def next_event(self) -> object | None:
        return None


class Uploader(FakeMachine):
    """A fake transfer engine: it can end its uploads to a peer."""

    def abandon_peer(self, peer: Address) -> int:
        self.abandoned.append(peer)
        self.log.calls.append(("abandon", self.name, peer))
        return 2


class FakeApplication:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.timer: float | None = None
        self.events_waiting = False

    def poll(self, now: float) -> None:
        self.log.calls.append(("poll",))

    def handle_timer(self, now: float) -> None:
        self.log.calls.append(("app timer",))

    def get_timer(self) -> float | None:
        return self.timer

    def has_events(self) -> bool:
        return self.events_waiting


class FakeTransport:
    def __init__(self, log: Log, blocked: set[int] | None = None) -> None:
        self.log = log
        self.blocked = blocked or set()

    def can_send(self, port: int) -> bool:
        return port not in self.blocked

    def send(self, port: int, datagrams: list[tuple[bytes, Address]]) -> None:
        self.log.calls.append(("send", port, [data for data, _ in datagrams]))

    def arm(self, port: int | None, deadline: float | None) -> None:
        self.log.calls.append(("arm", port, deadline))


def test_the_application_decides_before_machines_send_and_timers_are_rearmed() -> None:
    log = Log()
    control = FakeMachine(log, "control", [(b"hello", ("10.0.0.1", 1))])
    data = FakeMachine(log, "data", [])
    data.timer = 5.0
    application = FakeApplication(log)
    application.timer = 7.0
    pump(application, {10: control, 20: data}, FakeTransport(log), 1.0)
    assert log.calls == [
        ("poll",),
        ("asked", "control"),
        ("send", 10, [b"hello"]),
        ("arm", 10, None),
        ("asked", "data"),  # nothing to send: no empty send
        ("arm", 20, 5.0),
        ("arm", None, 7.0),
    ]


def test_input_that_leaves_no_event_sends_and_rearms_without_waking_the_application() -> None:
    log = Log()
    data = FakeMachine(log, "data", [(b"paced", ("10.0.0.1", 1))])
    data.timer = 5.0
    application = FakeApplication(log)
    application.timer = 7.0
    polled = pump(application, {20: data}, FakeTransport(log), 1.0, machine_input=True)
    assert not polled
    assert log.calls == [("asked", "data"), ("send", 20, [b"paced"]), ("arm", 20, 5.0)]
    application.events_waiting = True  # e.g. a chunk completed: the application decides
    log.calls.clear()
    assert pump(application, {20: data}, FakeTransport(log), 2.0, machine_input=True)
    assert log.calls == [("poll",), ("asked", "data"), ("arm", 20, 5.0), ("arm", None, 7.0)]


def test_a_back_pressured_port_is_not_asked_for_more_but_its_timer_is_kept() -> None:
    log = Log()
    data = FakeMachine(log, "data", [(b"later", ("10.0.0.1", 1))])
    data.timer = 3.0
    pump(None, {20: data}, FakeTransport(log, blocked={20}), 1.0)
    assert log.calls == [("arm", 20, 3.0)]
    assert data.outbox, "the datagram stays in the machine until the port drains"


def test_only_a_closed_port_ends_uploads_and_only_on_a_machine_that_uploads() -> None:
    log = Log()
    engine = Uploader(log, "engine", [])
    control = FakeMachine(log, "control", [])
    machines = {20: engine, 10: control}
    counters = UnreachableCounters()
    peer = ("10.0.0.9", 4000)
    assert port_unreachable(machines, 20, peer, "EHOSTUNREACH", counters) == 0
    assert port_unreachable(machines, 10, peer, PORT_CLOSED, counters) == 0
    assert port_unreachable(machines, 20, peer, PORT_CLOSED, counters) == 2
    assert engine.abandoned == [peer]
    assert counters == UnreachableCounters(reports=3, ports_closed=2, uploads_abandoned=2)


@pytest.mark.skipif(not LINUX_PATHS, reason="ICMP errors come from Linux's IP_RECVERR queue")
@in_event_loop
async def test_the_runner_ends_uploads_to_a_closed_port_whatever_the_role() -> None:
    # No on_socket_event handler: a client's runner has none, and must act all the same.
    closed = UdpSocket.bind("127.0.0.1", 0)
    closed_address = closed.local_address
    closed.close()
    log = Log()
    engine = Uploader(log, "engine", [(b"chunk", closed_address)])
    application = FakeApplication(log)
    runner = ApplicationRunner(application, [Binding(engine, "127.0.0.1", 0)])
    try:
        await wait_until(lambda: engine.abandoned == [closed_address])
        abandoned_at = log.calls.index(("abandon", "engine", closed_address))
        # The application then polls, and reads the cancelled uploads.
        await wait_until(lambda: ("poll",) in log.calls[abandoned_at:])
        assert runner.unreachable == UnreachableCounters(1, 1, 2)
    finally:
        runner.close()
    await asyncio.sleep(0)


@in_event_loop
async def test_the_runner_asks_each_machine_once_per_batch_after_the_application() -> None:
    # A batch of datagrams (and a timer) on one socket: the application polls once if a
    # machine holds an event for it, then every machine is asked what to send once (not
    # also by its endpoint before). A machine's timer that leaves no event polls nothing.
    log = Log()
    data = FakeMachine(log, "data", [])
    control = FakeMachine(log, "control", [])
    application = FakeApplication(log)
    runner = ApplicationRunner(
        application, [Binding(data, "127.0.0.1", 0), Binding(control, "127.0.0.1", 0)]
    )
    sender = UdpSocket.bind("127.0.0.1", 0)
    try:
        await wait_until(lambda: ("asked", "control") in log.calls)  # the first pump
        log.calls.clear()
        application.events_waiting = True
        sender.send([(b"one", runner.local_address(0)), (b"two", runner.local_address(0))])
        await wait_until(lambda: ("asked", "control") in log.calls)
        await asyncio.sleep(0.05)
        received = [call for call in log.calls if call[0] == "receive"]
        assert received == [("receive", "data", b"one"), ("receive", "data", b"two")]
        after = log.calls[log.calls.index(received[-1]) + 1 :]
        assert after == [("poll",), ("asked", "data"), ("asked", "control")]
        log.calls.clear()
        application.events_waiting = False
        data.timer = asyncio.get_running_loop().time() + 0.01
        runner.arm(runner.local_address(0)[1], data.timer)
        data.timer = None  # fires once
        await wait_until(lambda: ("asked", "control") in log.calls)
        await asyncio.sleep(0.05)
        assert log.calls == [("timer", "data"), ("asked", "data"), ("asked", "control")]
        assert runner.counters.pumps > runner.counters.polls
    finally:
        sender.close()
        runner.close()
    await asyncio.sleep(0)
