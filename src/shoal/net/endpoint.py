"""The asyncio shell: one sans-I/O machine on one UDP socket.

Theory of operation
-------------------
A ``DatagramEndpoint`` only moves bytes and re-arms one timer (the aioquic
``asyncio/protocol.py`` model):

* the socket is watched with ``loop.add_reader``; each wake-up drains a batch of
  datagrams into ``machine.receive_datagram`` and then calls ``transmit``;
* ``transmit`` hands the machine's events to ``on_event`` (which may call the machine
  again), sends whatever ``machine.datagrams_to_send`` returns, and re-arms
  ``loop.call_at`` at ``machine.get_timer()``;
* the timer calls ``machine.handle_timer`` and then ``transmit``.

Code outside the callbacks that calls the machine (for example to request a chunk)
calls ``transmit`` afterwards, as with aioquic's ``QuicConnectionProtocol``.

Pumped: an endpoint whose machine belongs to an application of several machines
(``shoal.net.runner``) is given ``pumped``, the runner's "input arrived" call. After a
batch of datagrams or a timer it then only reports the shell's own events and calls
``pumped()``; the pump (``shoal.net.pump``) asks the machine what to send once, after
the application decided, through ``send`` and ``arm``: the machine is not asked twice
per input (once here, once by the pump), and its events stay the application's.

Back-pressure: when the kernel refuses a send (``EAGAIN``: socket buffer full;
``ENOBUFS``: interface queue full) the unsent datagrams are kept, in order, and the
machine is not asked for more until they are gone: the shell waits for the socket to
become writable (``EAGAIN``) or for a short pause (``ENOBUFS``, where the socket may
poll writable while the queue is still full). Nothing is dropped silently.

The time passed to the machine is ``loop.time()`` (monotonic seconds).

The loop must support ``add_reader`` (every selector loop; on Windows, use
``asyncio.SelectorEventLoop`` rather than the default proactor loop).

Loss for benchmarks: ``receive_loss`` drops that fraction of received datagrams, from
a seeded generator, before the machine sees them. It stands in for ``tc netem``, which
this lab does not have; it is off (0.0) unless asked for.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shoal.net.errors import InterfaceQueueFull, NetworkError
from shoal.net.events import DatagramRefused, DeliveryFailed, SocketFailed
from shoal.net.loop_timer import LoopTimer
from shoal.net.machine import Address, BatchMachine, DatagramMachine
from shoal.net.udp import SendFailure, UdpConfig, UdpSocket

EventHandler = Callable[[object], None]

INTERFACE_QUEUE_RETRY_SECONDS = 0.0005


@dataclass(slots=True)
class LossCounters:
    """What the seeded receive-loss filter dropped."""

    datagrams_dropped: int = 0


@dataclass(slots=True)
class TimerCounters:
    """How the machine's timer fired: how often, and how late.

    asyncio sleeps in whole milliseconds (epoll), so a timer asked for a few
    microseconds ahead fires up to a millisecond late unless a datagram wakes the
    loop first; a pacer must allow for that.
    """

    fires: int = 0
    late_seconds_total: float = 0.0
    late_seconds_max: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The counters, with the mean lateness, as a JSON-ready mapping."""
        mean = self.late_seconds_total / self.fires if self.fires else 0.0
        return {
            "fires": self.fires,
            "late_seconds_mean": mean,
            "late_seconds_max": self.late_seconds_max,
        }


class DatagramEndpoint:
    """Drive ``machine`` from ``udp`` on the running asyncio loop.

    ``on_event`` receives every event of the machine and of the shell
    (``DeliveryFailed``, ``DatagramRefused``, ``SocketFailed``), in order.
    """

    def __init__(
        self,
        machine: DatagramMachine,
        udp: UdpSocket,
        on_event: EventHandler | None = None,
        *,
        receive_loss: float = 0.0,
        loss_seed: int = 0,
        loop: asyncio.AbstractEventLoop | None = None,
        pumped: Callable[[], None] | None = None,
    ) -> None:
        if not 0.0 <= receive_loss < 1.0:
            raise ValueError(f"receive_loss must be in [0, 1), not {receive_loss}")
        self.machine = machine
        self.udp = udp
        self.on_event: EventHandler = on_event or _ignore_event
        self.loss = LossCounters()
        self.timer_counters = TimerCounters()
        self._loop = loop or asyncio.get_running_loop()
        self._receive_loss = receive_loss
        self._loss_random = random.Random(loss_seed)
        self._timer = LoopTimer(self._loop, self._on_timer)
        self._pending: Sequence[tuple[bytes, Address]] = ()
        self._pending_index = 0
        self._blocked = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._pumped = pumped
        # A machine that takes a wake-up's datagrams in one call (``BatchMachine``, the
        # transfer engine) is given them so: its per-datagram work is then its own loop.
        self._receive_batch = (
            machine.receive_datagrams if isinstance(machine, BatchMachine) else None
        )
        self._loop.add_reader(udp.fileno(), self._on_readable)

    @classmethod
    def open(
        cls,
        machine: DatagramMachine,
        host: str,
        port: int,
        on_event: EventHandler | None = None,
        *,
        config: UdpConfig | None = None,
        receive_loss: float = 0.0,
        loss_seed: int = 0,
        pumped: Callable[[], None] | None = None,
    ) -> DatagramEndpoint:
        """Bind a UDP socket on ``host:port`` and drive ``machine`` from it.

        Call it from a coroutine: the endpoint attaches to the running event loop.
        Bind errors are ``NetworkError`` subclasses (``AddressUnavailable``...).
        ``pumped``: a pump drives the machine (see the module docstring).
        """
        udp = UdpSocket.bind(host, port, config)
        try:
            return cls(
                machine,
                udp,
                on_event,
                receive_loss=receive_loss,
                loss_seed=loss_seed,
                pumped=pumped,
            )
        except BaseException:
            udp.close()
            raise

    @property
    def local_address(self) -> Address:
        """The (host, port) the socket is bound to."""
        return self.udp.local_address

    @property
    def back_pressured(self) -> bool:
        """True while datagrams wait for the kernel to accept them."""
        return self._blocked

    def transmit(self) -> None:
        """Deliver events, send what the machine has to send, and re-arm the timer."""
        if self._closed:
            return
        self._deliver_events()
        if not self._blocked:
            self._flush()
        if not self._closed:  # (an event handler may have closed us)
            self._timer.arm(self.machine.get_timer())

    def can_send(self) -> bool:
        """True when no datagram waits for the kernel (no back-pressure)."""
        return not self._closed and not self._blocked

    def send(self, datagrams: Sequence[tuple[bytes, Address]]) -> None:
        """Send ``datagrams`` in order; what the kernel refuses for now is kept.

        For a pump that asks the machine itself (``shoal.net.pump``): call it only
        when ``can_send()``.
        """
        if self._closed:
            return
        if self._blocked:
            raise RuntimeError("send while back-pressured: check can_send() first")
        self._pending = datagrams
        self._pending_index = 0
        if datagrams:
            self._send_pending()

    def arm(self, timer_at: float | None) -> None:
        """Call the machine's ``handle_timer`` at ``timer_at`` (None: no timer)."""
        if self._closed:
            return
        self._timer.arm(timer_at)

    def close(self) -> None:
        """Stop watching the socket, cancel timers and close the socket."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.udp.fileno())
        self._loop.remove_writer(self.udp.fileno())
        self._timer.cancel()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        self._retry_handle = None
        self.udp.close()

    # -- callbacks -------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            received = self.udp.receive()
        except NetworkError as error:
            self.on_event(SocketFailed(str(error)))
            self.close()
            return
        now = self._loop.time()
        if self._receive_loss:
            chance = self._loss_random.random
            loss = self._receive_loss
            kept = [datagram for datagram in received if chance() >= loss]
            self.loss.datagrams_dropped += len(received) - len(kept)
            received = kept
        if self._receive_batch is not None:
            if received:
                self._receive_batch(received, now)
        else:
            machine = self.machine
            for data, address in received:
                machine.receive_datagram(data, address, now)
        self._after_input(bool(received))

    def _after_input(self, machine_changed: bool = True) -> None:
        if self._pumped is None:
            self.transmit()
        elif not self._closed:
            self._deliver_shell_events()
            if machine_changed:
                self._pumped()  # the pump asks the machine and re-arms (``send``, ``arm``)

    def _on_timer(self, deadline: float) -> None:
        now = self._loop.time()
        late = max(0.0, now - deadline)
        counters = self.timer_counters
        counters.fires += 1
        counters.late_seconds_total += late
        counters.late_seconds_max = max(counters.late_seconds_max, late)
        self.machine.handle_timer(now)
        self._after_input()

    def _on_unblocked(self) -> None:
        self._loop.remove_writer(self.udp.fileno())
        self._retry_handle = None
        self._blocked = False
        if self._pumped is None:
            self.transmit()
        elif not self._closed:
            if self._pending_index < len(self._pending):
                self._send_pending()
            self._pumped()  # the machine may send more now: the pump asks it

    # -- internals -------------------------------------------------------------------

    def _deliver_shell_events(self) -> None:
        udp = self.udp
        if udp.unreachable:
            reports, udp.unreachable = udp.unreachable, []
            for address, cause in reports:
                self.on_event(DeliveryFailed(address, cause))
        if udp.send_failures:
            failures: list[SendFailure]
            failures, udp.send_failures = udp.send_failures, []
            for failure in failures:
                self.on_event(DatagramRefused(failure.address, str(failure.error)))

    def _deliver_events(self) -> None:
        udp = self.udp
        if udp.unreachable or udp.send_failures:
            self._deliver_shell_events()
        if self._pumped is not None:
            return  # the machine's events are the application's
        machine = self.machine
        while (event := machine.next_event()) is not None:
            self.on_event(event)
            if self._closed:
                return

    def _flush(self) -> None:
        """Send what back-pressure held back, then the machine's datagrams for now.

        The machine is asked once per call: asking again in a loop would spin on its
        pacer (a few microseconds later it always has a token or two more) and send
        faster than it paces, in tiny batches. When it wants to send more later it
        says so with ``get_timer``.
        """
        if self._pending_index < len(self._pending) and not self._send_pending():
            return
        datagrams = self.machine.datagrams_to_send(self._loop.time())
        if datagrams:  # (nothing is pending here: ``send`` of nothing would change nothing)
            self.send(datagrams)

    def _send_pending(self) -> bool:
        """Send ``_pending`` from ``_pending_index``; False when back-pressure stopped it."""
        outcome = self.udp.send(self._pending, self._pending_index)
        self._pending_index = outcome.next_index
        if self.udp.unreachable or self.udp.send_failures:
            self._deliver_events()
        if outcome.blocked_by is not None:
            self._block(outcome.blocked_by)
            return False
        self._pending = ()
        self._pending_index = 0
        return True

    def _block(self, cause: NetworkError) -> None:
        self._blocked = True
        if isinstance(cause, InterfaceQueueFull):
            self._retry_handle = self._loop.call_later(
                INTERFACE_QUEUE_RETRY_SECONDS, self._on_unblocked
            )
        else:
            self._loop.add_writer(self.udp.fileno(), self._on_unblocked)


def _ignore_event(_event: object) -> None:
    """The default event handler: events nobody asked for are dropped."""
