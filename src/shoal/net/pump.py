"""The one pump between a host's sans-I/O machines and whatever carries their bytes.

Theory of operation
-------------------
A host (a client agent, a P2P server) is an *application* that owns several machines,
one per local port, reads their events itself in ``poll(now)`` and has a timer of its
own. Two shells run such hosts: ``net/runner.py`` on real UDP sockets and asyncio, and
the development simulator (``shoal_dev.sim.network``) on a virtual clock. Both do the
same step after any input to the host, and it lives here, once:

1. ``application.poll(now)``: the application reads its machines' events and decides;
2. for each machine, in port order of binding: if its transport can take datagrams
   (no back-pressure), send what ``datagrams_to_send(now)`` gives, then re-arm the
   machine's timer at ``get_timer()``;
3. re-arm the application's timer.

When the input reached the machines only (a datagram, a machine's own timer:
``machine_input``) and none of them holds an event (``Application.has_events``), steps
1 and 3 are skipped: a poll without events decides nothing that the application's timer
does not already say (everything it does at a time of its own is behind that timer), so
that timer stays as armed. Most of a swarm client's wake-ups are of that kind (a DATA
datagram inside a chunk, a pacing or delayed-ACK timer), and the poll and its
``get_timer`` were most of their cost. Any other input (the application's timer, a disk
result, an unreachable port) polls.

The shell only provides a ``Transport`` (send on a port, arm a port's timer at a
deadline, say whether a port may send now) and calls ``pump`` after each input.

Unreachable peers are handled here too, the same way in every role: when the network
says a datagram a machine sent could not be delivered because nothing listens on the
peer's port (ICMP port unreachable, ``ECONNREFUSED``; RFC 1122 §4.1.3.3 passes it up
to UDP's user), ``port_unreachable`` ends that machine's uploads to the peer if the
machine is a transfer engine (``abandon_peer``): the peer's process died or restarted,
and a restarted one asks again under new request IDs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from shoal.net.machine import Address

log = logging.getLogger("shoal.net.pump")

PORT_CLOSED = "ECONNREFUSED"
"""The ``DeliveryFailed.cause`` of an ICMP port unreachable: nothing listens there."""


class Application(Protocol):
    """A host's decision maker: it reads its machines' events in ``poll``."""

    def poll(self, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def has_events(self) -> bool:
        """Whether one of its machines holds an event it has not read (True when it
        cannot tell: it then polls after every input)."""
        ...


class PumpedMachine(Protocol):
    """What the pump asks of each machine (a subset of ``DatagramMachine``)."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def get_timer(self) -> float | None: ...


@runtime_checkable
class AbandonsPeers(Protocol):
    """A machine that can end its uploads to a peer nothing listens for any more
    (``TransferEngine.abandon_peer``)."""

    def abandon_peer(self, peer: Address) -> int: ...


class Transport(Protocol):
    """What carries a host's datagrams: sockets, or the simulator's links.

    Ports are the machines' keys in the mapping given to ``pump``; ``None`` is the
    application's own timer.
    """

    def can_send(self, port: int) -> bool:
        """False while earlier datagrams of ``port`` wait (back-pressure): the machine
        is then not asked for more, so its pacer is not drained into a queue."""
        ...

    def send(self, port: int, datagrams: list[tuple[bytes, Address]]) -> None:
        """Send ``datagrams`` (payload, destination) from ``port``, in order."""
        ...

    def arm(self, port: int | None, deadline: float | None) -> None:
        """Call the timer of ``port`` (the application's for None) at ``deadline``;
        None: no timer wanted (an armed one may stay: machines ignore early calls)."""
        ...


def pump(
    application: Application | None,
    machines: Mapping[int, PumpedMachine],
    transport: Transport,
    now: float,
    *,
    machine_input: bool = False,
) -> bool:
    """After input to a host: let its application decide, then send and re-arm.

    ``machine_input``: the input reached the machines only; the application then polls
    only if one of them holds an event for it. Returns whether it polled.
    """
    polls = application is not None and (not machine_input or application.has_events())
    if polls:
        assert application is not None
        application.poll(now)
    can_send, arm = transport.can_send, transport.arm  # bound once: 4 machines a pump
    for port, machine in machines.items():
        if can_send(port):
            datagrams = machine.datagrams_to_send(now)
            if datagrams:
                transport.send(port, datagrams)
        arm(port, machine.get_timer())
    if polls:
        assert application is not None
        transport.arm(None, application.get_timer())
    return polls


@dataclass(slots=True)
class UnreachableCounters:
    """What a host heard of undeliverable datagrams, and what it did about them."""

    reports: int = 0
    """Every undeliverable report, whatever its cause."""
    ports_closed: int = 0
    """ICMP port unreachable (``ECONNREFUSED``): the peer's process is gone."""
    uploads_abandoned: int = 0
    """Uploads ended because their peer's port closed."""


def port_unreachable(
    machines: Mapping[int, object],
    port: int,
    peer: Address,
    cause: str,
    counters: UnreachableCounters | None = None,
) -> int:
    """The network said a datagram from ``port`` to ``peer`` was undeliverable.

    For a closed port (``PORT_CLOSED``) the machine on ``port``, if it is a transfer
    engine, ends its uploads to ``peer``; other causes (host or net unreachable, which
    may pass) change nothing. Returns how many uploads ended. Call ``pump`` afterwards:
    the application reads the ``RequestCancelled`` events in ``poll``.
    """
    if counters is not None:
        counters.reports += 1
    if cause != PORT_CLOSED:
        return 0
    if counters is not None:
        counters.ports_closed += 1
    machine = machines.get(port)
    if not isinstance(machine, AbandonsPeers):
        return 0
    ended = machine.abandon_peer(peer)
    if counters is not None:
        counters.uploads_abandoned += ended
    if ended:
        log.info("%s:%d is unreachable (port closed): %d uploads to it ended", *peer, ended)
    return ended
