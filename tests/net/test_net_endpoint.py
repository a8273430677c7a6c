"""The asyncio shell over real UDP sockets on loopback.

A scripted machine sends what it is told and records what it receives; it has no
protocol of its own, so what these tests see is the shell: GSO batching and GRO
splitting, the plain path, back-pressure, ICMP errors, timers and the loss filter."""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from shoal.core.portable import LINUX_PATHS
from shoal.net import (
    Address,
    AddressUnavailable,
    DatagramEndpoint,
    DeliveryFailed,
    UdpConfig,
    UdpSocket,
)


@dataclass(frozen=True, slots=True)
class DatagramArrived:
    data: bytes
    address: Address


@dataclass
class ScriptedMachine:
    outbox: list[tuple[bytes, Address]] = field(default_factory=list)
    received: list[DatagramArrived] = field(default_factory=list)
    events: list[object] = field(default_factory=list)
    timer: float | None = None
    timer_calls: list[float] = field(default_factory=list)

    def queue(self, data: bytes, address: Address) -> None:
        self.outbox.append((data, address))

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        arrived = DatagramArrived(bytes(data), addr)
        self.received.append(arrived)
        self.events.append(arrived)

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        self.timer = None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        outgoing, self.outbox = self.outbox, []
        return outgoing

    def get_timer(self) -> float | None:
        return self.timer

    def next_event(self) -> object | None:
        return self.events.pop(0) if self.events else None


# -- helpers -----------------------------------------------------------------------------


def in_event_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*arguments: Any, **keywords: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*arguments, **keywords), timeout=20))

    return run


class FlakySocket:
    """A socket whose first sends fail with ``failure``: back-pressure on demand."""

    def __init__(self, real: socket.socket, failure: OSError, times: int) -> None:
        self._real = real
        self._failure = failure
        self.failures_left = times

    def _maybe_fail(self) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise self._failure

    def sendto(self, data: bytes, address: Address) -> int:
        self._maybe_fail()
        return self._real.sendto(data, address)

    def sendmsg(self, *arguments: Any) -> int:
        self._maybe_fail()
        return self._real.sendmsg(*arguments)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def numbered(count: int, size: int, last_size: int | None = None) -> list[bytes]:
    """``count`` distinct payloads of ``size`` bytes (the last one ``last_size``)."""
    payloads = []
    for index in range(count):
        length = last_size if last_size is not None and index == count - 1 else size
        payloads.append(index.to_bytes(4, "big") * (length // 4) + b"x" * (length % 4))
    return payloads


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Let the loop run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def open_pair(
    sender_config: UdpConfig, receiver_config: UdpConfig
) -> tuple[ScriptedMachine, DatagramEndpoint, ScriptedMachine, DatagramEndpoint, list[object]]:
    receiver_events: list[object] = []
    sender_machine = ScriptedMachine()
    receiver_machine = ScriptedMachine()
    sender = DatagramEndpoint.open(sender_machine, "127.0.0.1", 0, config=sender_config)
    receiver = DatagramEndpoint.open(
        receiver_machine, "127.0.0.1", 0, receiver_events.append, config=receiver_config
    )
    return sender_machine, sender, receiver_machine, receiver, receiver_events


# -- tests -------------------------------------------------------------------------------


def gso_available() -> bool:
    probe = UdpSocket.bind("127.0.0.1", 0)
    try:
        return probe.gso_enabled and probe.gro_enabled
    finally:
        probe.close()


@pytest.mark.skipif(not gso_available(), reason="this kernel has no UDP GSO/GRO")
@in_event_loop
async def test_gso_batches_arrive_as_the_datagrams_that_were_queued() -> None:
    sender_machine, sender, receiver_machine, receiver, _ = open_pair(UdpConfig(), UdpConfig())
    try:
        payloads = numbered(100, 1400, last_size=333)
        for payload in payloads:
            sender_machine.queue(payload, receiver.local_address)
        sender.transmit()
        await wait_until(lambda: len(receiver_machine.received) == len(payloads))
        assert [arrived.data for arrived in receiver_machine.received] == payloads
        assert {arrived.address for arrived in receiver_machine.received} == {sender.local_address}
        # 100 datagrams of 1400 bytes: 46 fit in 64 KiB, so three GSO sends.
        assert sender.udp.counters.gso_send_calls == 3
        assert sender.udp.counters.send_calls == 3
        assert sender.udp.counters.datagrams_sent == 100
        assert receiver.udp.counters.gro_buffers >= 1
        assert receiver.udp.counters.receive_calls < 100
    finally:
        sender.close()
        receiver.close()


@in_event_loop
async def test_plain_path_sends_one_datagram_per_call() -> None:
    plain = UdpConfig.plain()
    sender_machine, sender, receiver_machine, receiver, _ = open_pair(plain, plain)
    try:
        assert not sender.udp.gso_enabled and not receiver.udp.gro_enabled
        payloads = numbered(60, 1400, last_size=10)
        for payload in payloads:
            sender_machine.queue(payload, receiver.local_address)
        sender.transmit()
        await wait_until(lambda: len(receiver_machine.received) == len(payloads))
        assert [arrived.data for arrived in receiver_machine.received] == payloads
        assert sender.udp.counters.gso_send_calls == 0
        assert sender.udp.counters.send_calls == 60
        assert receiver.udp.counters.receive_calls == 60
    finally:
        sender.close()
        receiver.close()


@pytest.mark.skipif(not gso_available(), reason="this kernel has no UDP GSO/GRO")
@in_event_loop
async def test_batches_break_on_address_and_size_changes() -> None:
    sender_machine, sender, first_machine, first, _ = open_pair(UdpConfig(), UdpConfig())
    second_machine = ScriptedMachine()
    second = DatagramEndpoint.open(second_machine, "127.0.0.1", 0)
    try:
        # first: 3 x 1000; second: 2 x 1000; first: 2 x 800, then 1 x 900 (larger: new batch)
        plan = [
            (first, 1000),
            (first, 1000),
            (first, 1000),
            (second, 1000),
            (second, 1000),
            (first, 800),
            (first, 800),
            (first, 900),
        ]
        for index, (endpoint, size) in enumerate(plan):
            sender_machine.queue(bytes([index]) * size, endpoint.local_address)
        sender.transmit()
        await wait_until(lambda: len(first_machine.received) + len(second_machine.received) == 8)
        assert [len(a.data) for a in first_machine.received] == [1000] * 3 + [800, 800, 900]
        assert [a.data[0] for a in first_machine.received] == [0, 1, 2, 5, 6, 7]
        assert [a.data[0] for a in second_machine.received] == [3, 4]
        assert sender.udp.counters.send_calls == 4
        assert sender.udp.counters.gso_send_calls == 3
    finally:
        for endpoint in (sender, first, second):
            endpoint.close()


@pytest.mark.parametrize(
    ("failure", "name"),
    [
        (BlockingIOError(errno.EAGAIN, "busy"), "EAGAIN"),
        (OSError(errno.ENOBUFS, "full"), "ENOBUFS"),
    ],
)
@in_event_loop
async def test_back_pressure_delays_datagrams_and_loses_none(failure: OSError, name: str) -> None:
    plain = UdpConfig.plain()
    sender_machine, sender, receiver_machine, receiver, _ = open_pair(plain, plain)
    flaky = FlakySocket(sender.udp.sock, failure, times=3)
    sender.udp.sock = flaky  # type: ignore[assignment]
    try:
        payloads = numbered(20, 500)
        for payload in payloads[:10]:
            sender_machine.queue(payload, receiver.local_address)
        sender.transmit()
        assert sender.back_pressured, name
        # While blocked the machine is not asked for more: these wait in its outbox.
        for payload in payloads[10:]:
            sender_machine.queue(payload, receiver.local_address)
        sender.transmit()
        assert len(sender_machine.outbox) == 10
        await wait_until(lambda: len(receiver_machine.received) == 20)
        assert [arrived.data for arrived in receiver_machine.received] == payloads
        assert sender.udp.counters.send_blocked == 3
        assert not sender.back_pressured
    finally:
        sender.close()
        receiver.close()


@pytest.mark.skipif(not LINUX_PATHS, reason="ICMP errors come from Linux's IP_RECVERR queue")
@in_event_loop
async def test_closed_port_is_reported_as_peer_unreachable() -> None:
    events: list[object] = []
    machine = ScriptedMachine()
    endpoint = DatagramEndpoint.open(machine, "127.0.0.1", 0, events.append)
    closed = UdpSocket.bind("127.0.0.1", 0)
    closed_address = closed.local_address
    closed.close()
    try:
        machine.queue(b"hello", closed_address)
        endpoint.transmit()
        await wait_until(lambda: any(isinstance(event, DeliveryFailed) for event in events))
        reports = [event for event in events if isinstance(event, DeliveryFailed)]
        assert reports == [DeliveryFailed(closed_address, "ECONNREFUSED")]
        # The socket still works after the error.
        echo_machine = ScriptedMachine()
        echo = DatagramEndpoint.open(echo_machine, "127.0.0.1", 0)
        machine.queue(b"still alive", echo.local_address)
        endpoint.transmit()
        await wait_until(lambda: len(echo_machine.received) == 1)
        echo.close()
    finally:
        endpoint.close()


@in_event_loop
async def test_timer_fires_and_is_rearmed_from_the_machine() -> None:
    machine = ScriptedMachine()
    endpoint = DatagramEndpoint.open(machine, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    try:
        first_deadline = loop.time() + 0.02
        machine.timer = first_deadline
        endpoint.transmit()
        await wait_until(lambda: len(machine.timer_calls) == 1)
        # Not early: the machine is woken at the deadline it asked for or after (asyncio
        # may run a handle up to one clock tick early), with the loop's clock as ``now``.
        tick = time.get_clock_info("monotonic").resolution
        assert machine.timer_calls[0] >= first_deadline - tick
        assert machine.timer_calls[0] <= loop.time()
        assert machine.timer is None
        # Re-armed from the machine's new answer, not a stale handle.
        second_deadline = loop.time() + 0.01
        machine.timer = second_deadline
        endpoint.transmit()
        await wait_until(lambda: len(machine.timer_calls) == 2)
        assert machine.timer_calls[1] >= second_deadline - tick
        # A timer the machine withdraws (None) never fires.
        machine.timer = loop.time() + 0.01
        endpoint.transmit()
        machine.timer = None
        endpoint.transmit()
        await asyncio.sleep(0.05)
        assert len(machine.timer_calls) == 2
    finally:
        endpoint.close()


@in_event_loop
async def test_receive_loss_drops_the_configured_fraction_reproducibly() -> None:
    dropped = []
    for _ in range(2):
        sender_machine = ScriptedMachine()
        sender = DatagramEndpoint.open(sender_machine, "127.0.0.1", 0)
        receiver_machine = ScriptedMachine()
        receiver = DatagramEndpoint.open(
            receiver_machine, "127.0.0.1", 0, receive_loss=0.25, loss_seed=7
        )
        try:
            for payload in numbered(400, 100):
                sender_machine.queue(payload, receiver.local_address)
            sender.transmit()
            await wait_until(
                lambda r=receiver, m=receiver_machine: (
                    len(m.received) + r.loss.datagrams_dropped == 400
                )
            )
            dropped.append(receiver.loss.datagrams_dropped)
        finally:
            sender.close()
            receiver.close()
    assert dropped[0] == dropped[1]
    assert 60 <= dropped[0] <= 140


@pytest.mark.skipif(not gso_available(), reason="this kernel has no UDP GSO/GRO")
@in_event_loop
async def test_refused_gso_falls_back_to_plain_sends_without_losing_datagrams() -> None:
    sender_machine, sender, receiver_machine, receiver, _ = open_pair(UdpConfig(), UdpConfig())
    # A device without segmentation offload answers a GSO send with EIO.
    sender.udp.sock = FlakySocket(sender.udp.sock, OSError(errno.EIO, "I/O error"), times=1)  # type: ignore[assignment]
    try:
        payloads = numbered(30, 1200)
        for payload in payloads:
            sender_machine.queue(payload, receiver.local_address)
        sender.transmit()
        await wait_until(lambda: len(receiver_machine.received) == 30)
        assert [arrived.data for arrived in receiver_machine.received] == payloads
        assert not sender.udp.gso_enabled
        assert "GSO turned off" in sender.udp.offload_note
        assert sender.udp.counters.send_calls == 30
    finally:
        sender.close()
        receiver.close()


def test_binding_a_port_in_use_names_the_cause() -> None:
    first = UdpSocket.bind("127.0.0.1", 0)
    try:
        host, port = first.local_address
        with pytest.raises(AddressUnavailable, match=f"binding UDP 127.0.0.1:{port}"):
            UdpSocket.bind(host, port)
    finally:
        first.close()


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
@in_event_loop
async def test_ipv6_endpoints_exchange_datagrams_with_plain_addresses() -> None:
    sender_machine = ScriptedMachine()
    receiver_machine = ScriptedMachine()
    sender = DatagramEndpoint.open(sender_machine, "::1", 0)
    receiver = DatagramEndpoint.open(receiver_machine, "::1", 0)
    try:
        payloads = numbered(5, 1000)
        for payload in payloads:
            sender_machine.queue(payload, receiver.local_address)
        sender.transmit()
        await wait_until(lambda: len(receiver_machine.received) == 5)
        assert [arrived.data for arrived in receiver_machine.received] == payloads
        # Machines see (host, port) pairs, as for IPv4.
        assert receiver_machine.received[0].address == sender.local_address
        assert len(sender.local_address) == 2
    finally:
        sender.close()
        receiver.close()
