"""An in-memory enterprise network with a virtual clock.

Theory of operation
-------------------
Offices are broadcast domains (one subnet each) behind a router whose WAN link joins
the core; the central office is one of them. Every host has a NIC; every link is a
FIFO with a rate, a propagation delay, a drop-tail buffer (in seconds of queue) and an
optional random loss, all driven by one seeded RNG, so a run is a pure function of its
inputs. A datagram from host A to host B crosses A's uplink, then (between offices) A's
office WAN uplink and B's office WAN downlink, then B's downlink. A datagram to the
office broadcast address reaches every other host of the office bound to that port.

Hosts run sans-I/O machines bound to ports (anything with ``receive_datagram``,
``handle_timer``, ``datagrams_to_send`` and ``get_timer``) and an optional
application that drains their events and makes decisions (``poll``), with a timer of
its own. After any input to a host, the simulator runs the runtime's own pump
(``shoal.net.pump.pump``, the step the asyncio runner runs on real sockets): it polls
the application, then sends what every machine of the host has queued and re-arms
their timers.

ICMP port unreachable is modelled as Linux answers UDP to a closed port on a live
host: a unicast datagram that reaches a host with nothing bound on its port, or whose
process is dead (``kill``), is answered with an ICMP error (IPv4 + ICMP headers and the
offending datagram, at most 576 bytes, RFC 1812 §4.3.2.3) that crosses the links back,
rate-limited per destination like Linux's ``icmp_ratelimit`` (a token a second, a
burst of 6). When it reaches a live sender, ``shoal.net.pump.port_unreachable`` acts
on it, as the asyncio runner does with ``DeliveryFailed``: a transfer engine ends its
uploads to that peer, in every role. Broadcasts and datagrams to an unknown address
get no answer.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from shoal.net.machine import Address
from shoal.net.pump import (
    PORT_CLOSED,
    Application,
    UnreachableCounters,
    port_unreachable,
    pump,
)

__all__ = [
    "UDP_IP_OVERHEAD",
    "Address",
    "Application",
    "Host",
    "IcmpCounters",
    "Link",
    "Machine",
    "Office",
    "SimNetwork",
    "TimeStoodStill",
]

UDP_IP_OVERHEAD = 28  # IPv4 + UDP headers, counted on every link
ICMP_OVERHEAD = 28  # IPv4 + ICMP headers before the quoted datagram
ICMP_MAX_SIZE = 576  # RFC 1812 §4.3.2.3: an ICMP error quotes up to 576 bytes in all
ICMP_RATE = 1.0  # Linux icmp_ratelimit (1000 ms): one error a second per destination
ICMP_BURST = 6.0  # Linux XRLIM_BURST_FACTOR
MAX_EVENTS_PER_INSTANT = 5000
"""Most events one host port (or application) may fire at one virtual instant."""


class TimeStoodStill(RuntimeError):
    """One host's machine fired more than ``MAX_EVENTS_PER_INSTANT`` events at one
    instant: a timer re-armed at ``now`` that its ``handle_timer`` leaves due (in a real
    process, a busy event loop). Names the host, port and machine."""

    def __init__(self, instant: float, source: str, events: int) -> None:
        super().__init__(
            f"time stood still at {instant:.6f} s: {source} fired {events} events at that "
            "instant (a timer that handle_timer leaves due?)"
        )
        self.instant = instant
        self.source = source
        self.events = events


class Machine(Protocol):
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def get_timer(self) -> float | None: ...


@dataclass(slots=True)
class IcmpCounters:
    """ICMP port unreachable errors the simulated hosts sent."""

    sent: int = 0
    rate_limited: int = 0
    """Not sent: the answering host's per-destination token bucket was empty."""


@dataclass(slots=True)
class Link:
    """A FIFO link: serialisation at ``rate`` bytes/s, then ``delay`` seconds."""

    name: str
    rate: float
    delay: float = 0.0005
    buffer_seconds: float = 0.25
    loss: float = 0.0
    free_at: float = 0.0
    bytes_sent: int = 0
    datagrams_sent: int = 0
    datagrams_dropped: int = 0

    def transmit(self, size: int, departure: float, rng: random.Random) -> float | None:
        """Return when the datagram has crossed the link, or None if it was dropped
        (a queue full, a loss, or a link cut: rate 0)."""
        if self.rate <= 0.0:
            self.datagrams_dropped += 1
            return None
        start = max(departure, self.free_at)
        if start - departure > self.buffer_seconds:
            self.datagrams_dropped += 1
            return None
        self.free_at = start + size / self.rate
        self.bytes_sent += size
        self.datagrams_sent += 1
        if self.loss and rng.random() < self.loss:
            self.datagrams_dropped += 1
            return None
        return self.free_at + self.delay


@dataclass(slots=True)
class Office:
    """One broadcast domain behind a router with a WAN link to the core."""

    name: str
    subnet: ipaddress.IPv4Network
    wan_up: Link
    wan_down: Link
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def broadcast(self) -> str:
        return str(self.subnet.broadcast_address)


@dataclass(slots=True)
class Host:
    """A device: an address, a NIC, machines bound to ports, an application."""

    ip: str
    office: Office
    up: Link
    down: Link
    machines: dict[int, Machine] = field(default_factory=dict)
    application: Application | None = None
    alive: bool = True
    armed: dict[int | None, float] = field(default_factory=dict)
    icmp_tokens: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per destination IP: (tokens, when counted), Linux's ICMP rate limit."""


class SimNetwork:
    """The simulator: offices, hosts, links, and the virtual clock's event queue."""

    def __init__(
        self, seed: int = 0, start: float = 0.0, *, pump_window: float | None = None
    ) -> None:
        self.now = start
        self.pump_window = pump_window
        """None: a host pumps after each input. A number: inputs reach a host's machines
        as they arrive and are pumped together, as the runner pumps once per loop turn
        for every socket that was readable: once at the end of the instant of the first
        one (every input of that instant, in one poll), then at most once per
        ``pump_window`` seconds (a loop turn's length; 0: once per instant)."""
        self._busy_until: dict[str, float] = {}
        self._pending: dict[str, bool] = {}
        self.rng = random.Random(seed)
        self.offices: dict[str, Office] = {}
        self.hosts: dict[str, Host] = {}
        self._queue: list[tuple[float, int, Callable[[], None], str]] = []
        self._sequence = 0
        self.max_events_per_instant = MAX_EVENTS_PER_INSTANT
        self._instant = float("-inf")
        self._fired_at_instant: dict[str, int] = {}
        self._sources: dict[tuple[str, int | None, type], str] = {}
        self._transports: dict[str, _HostTransport] = {}
        self.pumps = 0
        """Pumps so far (a host's application may have decided something since)."""
        self.polls = 0
        """Pumps in which the application polled."""
        self.icmp = IcmpCounters()
        self.unreachable = UnreachableCounters()
        """What hosts heard of ICMP port unreachable errors, and did about them."""

    # ------------------------------------------------------------ building

    def add_office(
        self,
        name: str,
        subnet: str,
        *,
        wan_rate: float,
        wan_delay: float = 0.01,
        wan_loss: float = 0.0,
        buffer_seconds: float = 0.25,
    ) -> Office:
        """An office whose WAN link carries ``wan_rate`` bytes/s each way."""
        office = Office(
            name=name,
            subnet=ipaddress.IPv4Network(subnet),
            wan_up=Link(f"{name}/wan-up", wan_rate, wan_delay, buffer_seconds, wan_loss),
            wan_down=Link(f"{name}/wan-down", wan_rate, wan_delay, buffer_seconds, wan_loss),
        )
        self.offices[name] = office
        return office

    def add_host(
        self,
        office: Office,
        ip: str,
        *,
        nic_rate: float = 125e6,
        lan_loss: float = 0.0,
        up_rate: float | None = None,
        down_rate: float | None = None,
        buffer_seconds: float = 0.25,
    ) -> Host:
        """A host with a NIC of ``nic_rate`` bytes/s (default 1 Gbit/s) each way, or
        ``up_rate`` and ``down_rate`` bytes/s when its link is asymmetric; each direction
        queues ``buffer_seconds`` of traffic before it drops."""
        if ipaddress.IPv4Address(ip) not in office.subnet:
            raise ValueError(f"{ip} is not in office {office.name} ({office.subnet})")
        up = nic_rate if up_rate is None else up_rate
        down = nic_rate if down_rate is None else down_rate
        host = Host(
            ip=ip,
            office=office,
            up=Link(f"{ip}/up", up, 0.0001, buffer_seconds, lan_loss),
            down=Link(f"{ip}/down", down, 0.0001, buffer_seconds, lan_loss),
        )
        office.hosts[ip] = host
        self.hosts[ip] = host
        return host

    def bind(self, host: Host, port: int, machine: Machine) -> None:
        host.machines[port] = machine
        self.pump(host)

    def attach(self, host: Host, application: Application) -> None:
        host.application = application
        self.pump(host)

    def kill(self, host: Host) -> None:
        """The host stops: it sends nothing more and drops what reaches it."""
        host.alive = False

    def restart(self, host: Host, machines: dict[int, Machine], application: Application) -> None:
        """The host comes back with new machines (a restarted process)."""
        host.machines = dict(machines)
        host.application = application
        host.armed.clear()
        host.alive = True
        self.pump(host)

    # ------------------------------------------------------------- running

    def at(self, when: float, action: Callable[[], None], source: str = "") -> None:
        """Run ``action`` at virtual time ``when``.

        ``source`` names the timer it fires (host, port, machine): timers are counted per
        instant (``TimeStoodStill``). Datagrams need none: every link takes time.
        """
        self._sequence += 1
        heapq.heappush(self._queue, (when, self._sequence, action, source))

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> float:
        """Process events until ``until`` (virtual seconds) or ``stop()``; return now.

        Raises ``TimeStoodStill`` when one source fires more than
        ``max_events_per_instant`` events at one instant: the run would never end.
        """
        queue, pop = self._queue, heapq.heappop
        while queue and queue[0][0] <= until:
            when, _, action, source = pop(queue)
            if when > self.now:
                self.now = when
            if source:
                self._count(source)
            action()
            if stop is not None and stop():
                return self.now
        self.now = max(self.now, until) if not self._queue else self.now
        return self.now

    def _count(self, source: str) -> None:
        if self.now != self._instant:
            self._instant = self.now
            self._fired_at_instant.clear()
        fired = self._fired_at_instant[source] = self._fired_at_instant.get(source, 0) + 1
        if fired > self.max_events_per_instant:
            raise TimeStoodStill(self.now, source or "an unnamed event", fired)

    def pump(self, host: Host, *, machine_input: bool = False) -> None:
        """After input to ``host``: let its application decide, then send and re-arm
        (``machine_input``: a datagram or a machine's timer, ``shoal.net.pump``)."""
        if not host.alive:
            return
        self.pumps += 1
        transport = self._transports.get(host.ip)
        if transport is None or transport.host is not host:  # one per host, not per pump
            transport = self._transports[host.ip] = _HostTransport(self, host)
        if pump(host.application, host.machines, transport, self.now, machine_input=machine_input):
            self.polls += 1

    def input_reached(self, host: Host, *, machine_input: bool) -> None:
        """Input reached ``host`` (its machines have it): pump now, or (``pump_window``)
        once for every input of the instant, at its end, and at most once a window."""
        window = self.pump_window
        if window is None:
            self.pump(host, machine_input=machine_input)
            return
        ip = host.ip
        pending = self._pending.get(ip)
        if pending is not None:  # a pump is due: it takes this input too
            self._pending[ip] = pending and machine_input
            return
        self._pending[ip] = machine_input

        def pump_pending() -> None:
            self._busy_until[ip] = self.now + window
            self.pump(host, machine_input=self._pending.pop(ip))

        self.at(max(self.now, self._busy_until.get(ip, self.now)), pump_pending)

    def _arm(self, host: Host, port: int | None, deadline: float | None) -> None:
        if deadline is None or host.armed.get(port) == deadline:
            return
        host.armed[port] = deadline

        def fire() -> None:
            if not host.alive or host.armed.get(port) != deadline:
                return  # re-armed since, or the host died
            del host.armed[port]
            target = host.application if port is None else host.machines[port]
            assert target is not None
            target.handle_timer(self.now)
            self.input_reached(host, machine_input=port is not None)

        machine = host.application if port is None else host.machines.get(port)
        named = (host.ip, port, type(machine))
        source = self._sources.get(named)
        if source is None:  # formatted once per host, port and machine type, not per arm
            where = "application" if port is None else f"port {port}"
            source = self._sources[named] = f"{host.ip} {where} ({type(machine).__name__})"
        self.at(max(deadline, self.now), fire, source)

    # ------------------------------------------------------------- routing

    def _route(self, sender: Host, port: int, data: bytes, destination: Address) -> None:
        ip, destination_port = destination
        source = (sender.ip, port)
        size = len(data) + UDP_IP_OVERHEAD
        if ip == sender.office.broadcast or ip == "255.255.255.255":
            neighbours = [
                neighbour
                for neighbour in sender.office.hosts.values()
                if neighbour is not sender and destination_port in neighbour.machines
            ]

            def fan_out() -> None:
                for neighbour in neighbours:
                    self._carry(
                        [neighbour.down],
                        size,
                        lambda neighbour=neighbour: self._deliver(  # type: ignore[misc]
                            neighbour, destination_port, data, source, answer=False
                        ),
                    )

            self._carry([sender.up], size, fan_out)
            return
        receiver = self.hosts.get(ip)
        if receiver is None:
            return  # no such host: the datagram is lost, as on a real network
        self._carry(
            self._path(sender, receiver),
            size,
            lambda: self._deliver(receiver, destination_port, data, source, answer=True),
        )

    @staticmethod
    def _path(sender: Host, receiver: Host) -> list[Link]:
        path = [sender.up]
        if receiver.office is not sender.office:
            path += [sender.office.wan_up, receiver.office.wan_down]
        path.append(receiver.down)
        return path

    def _carry(self, path: list[Link], size: int, arrive: Callable[[], None]) -> None:
        """Cross ``path`` one link at a time, each when the packet reaches it, then
        ``arrive()``.

        A link queues packets in the order they reach it, so each hop is its own
        event: transmitting on a later link at send time would let a packet still
        queued upstream delay traffic that reaches that link first.
        """
        arrival = path[0].transmit(size, self.now, self.rng)
        if arrival is None:
            return
        rest = path[1:]
        if rest:
            self.at(arrival, lambda: self._carry(rest, size, arrive))
            return
        self.at(arrival, arrive)

    def _deliver(
        self, receiver: Host, port: int, data: bytes, source: Address, *, answer: bool
    ) -> None:
        """A datagram reached ``receiver``'s NIC: to its machine, or (unicast) an ICMP
        port unreachable back to ``source`` when nothing listens on ``port``."""
        machine = receiver.machines.get(port)
        if receiver.alive and machine is not None:
            machine.receive_datagram(data, source, self.now)
            self.input_reached(receiver, machine_input=True)
        elif answer:
            self.answer_unreachable(receiver, port, len(data), source)

    def answer_unreachable(self, receiver: Host, port: int, size: int, source: Address) -> None:
        """A datagram of ``size`` bytes from ``source`` reached ``receiver``'s ``port``,
        where nothing listens: the host answers ICMP port unreachable (rate-limited as
        Linux does), carried back over the links."""
        sender = self.hosts.get(source[0])
        if sender is None:
            return
        tokens, counted = receiver.icmp_tokens.get(sender.ip, (ICMP_BURST, self.now))
        tokens = min(ICMP_BURST, tokens + (self.now - counted) * ICMP_RATE)
        if tokens < 1.0:
            receiver.icmp_tokens[sender.ip] = (tokens, self.now)
            self.icmp.rate_limited += 1
            return
        receiver.icmp_tokens[sender.ip] = (tokens - 1.0, self.now)
        self.icmp.sent += 1
        size = min(ICMP_MAX_SIZE, ICMP_OVERHEAD + UDP_IP_OVERHEAD + size)
        closed = (receiver.ip, port)
        self._carry(
            self._path(receiver, sender),
            size,
            lambda: self._unreachable_arrived(sender, source[1], closed),
        )

    def _unreachable_arrived(self, sender: Host, port: int, closed: Address) -> None:
        """The ICMP error reached the sender: its socket on ``port`` hears it (Linux
        ``IP_RECVERR``), if the process still lives and holds the port."""
        if not sender.alive or port not in sender.machines:
            return
        port_unreachable(sender.machines, port, closed, PORT_CLOSED, self.unreachable)
        self.input_reached(sender, machine_input=False)


class _HostTransport:
    """One host's ports on the simulated links, as ``shoal.net.pump.pump`` sees them."""

    __slots__ = ("host", "network")

    def __init__(self, network: SimNetwork, host: Host) -> None:
        self.network = network
        self.host = host

    def can_send(self, port: int) -> bool:
        return True  # links queue (drop-tail); a socket buffer is not modelled

    def send(self, port: int, datagrams: list[tuple[bytes, Address]]) -> None:
        route = self.network._route
        for data, destination in datagrams:
            route(self.host, port, data, destination)

    def arm(self, port: int | None, deadline: float | None) -> None:
        # Most machines want no timer (flow engines never), or the one already armed.
        if deadline is not None and self.host.armed.get(port) != deadline:
            self.network._arm(self.host, port, deadline)
