"""Run an application of several sans-I/O machines on real UDP sockets.

``AgentCore`` (client) and ``ServerNode`` (server) own several machines, one per port,
and read their events themselves in ``poll(now)``; they also have a timer of their
own. ``ApplicationRunner`` is their asyncio shell; the step it runs after input is
``shoal.net.pump.pump``, the same one the simulator runs on its virtual clock:

* each machine gets a pumped ``DatagramEndpoint`` (``pumped=input_arrived``): it feeds
  the machine datagrams and timer calls, reports the shell's events, and leaves the
  machine's events to the application and its sending to the pump;
* after input, one ``pump`` runs on the next loop iteration (coalesced over every
  socket that was readable): the application polls, every endpoint not back-pressured
  sends what its machine queued, and the timers are re-armed. Each machine is asked
  what to send once per input, after the application decided. When every input since
  the last step reached the machines only (datagrams, their own timers), the
  application polls only if a machine holds an event for it (``pump``'s
  ``machine_input``);
* the application's own timer calls ``handle_timer`` and the same step, with a poll;
* an ICMP port unreachable on an endpoint's socket (``DeliveryFailed``) goes to
  ``shoal.net.pump.port_unreachable`` (a transfer engine ends its uploads to that
  peer), then the step runs, whatever the role.

Time is ``loop.time()``, as in the endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from shoal.net.endpoint import DatagramEndpoint, EventHandler
from shoal.net.events import DeliveryFailed
from shoal.net.loop_timer import LoopTimer
from shoal.net.machine import Address, DatagramMachine
from shoal.net.pump import Application, UnreachableCounters, port_unreachable, pump
from shoal.net.udp import UdpConfig

__all__ = ["Application", "ApplicationRunner", "Binding", "sleep_or_stop"]


@dataclass(frozen=True, slots=True)
class Binding:
    """One machine on one socket: where to bind, and how."""

    machine: Any
    host: str
    port: int
    config: UdpConfig | None = None


@dataclass(slots=True)
class LoopCounters:
    """How often the runner woke its application: each wake-up is a whole ``pump``."""

    pumps: int = 0
    """Steps run (after input, and after the application's own timer)."""
    application_timer_fires: int = 0
    """The application's own timer (``handle_timer``), among ``pumps``."""
    polls: int = 0
    """Steps in which the application polled (the others only sent and re-armed)."""


class _Slot:
    """One endpoint's shell events, told to the runner with the port they came from."""

    def __init__(self, runner: ApplicationRunner) -> None:
        self.runner = runner
        self.port = 0

    def on_event(self, event: object) -> None:
        self.runner._socket_event(self.port, event)


class ApplicationRunner:
    """Bind every machine of ``application`` and drive them on the running loop.

    ``on_socket_event`` still hears every shell event (``DeliveryFailed``...), after
    the runner has acted on it.
    """

    def __init__(
        self,
        application: Application,
        bindings: list[Binding],
        on_socket_event: EventHandler | None = None,
    ) -> None:
        self.application = application
        self.unreachable = UnreachableCounters()
        self.counters = LoopCounters()
        self._on_socket_event = on_socket_event
        self._loop = asyncio.get_running_loop()
        self._poll_scheduled = False
        self._application_input = True
        """Input other than the machines' own since the last step: the next one polls."""
        self._timer = LoopTimer(self._loop, self._on_timer)
        self._closed = False
        self.endpoints: list[DatagramEndpoint] = []
        self.machines: dict[int, DatagramMachine] = {}
        """The machines by the local port their endpoint is bound to."""
        self._endpoint_at: dict[int, DatagramEndpoint] = {}
        try:
            for binding in bindings:
                slot = _Slot(self)
                endpoint = DatagramEndpoint.open(
                    binding.machine,
                    binding.host,
                    binding.port,
                    slot.on_event,
                    config=binding.config,
                    pumped=self._machine_input,
                )
                slot.port = endpoint.local_address[1]
                self.endpoints.append(endpoint)
                self.machines[slot.port] = binding.machine
                self._endpoint_at[slot.port] = endpoint
        except BaseException:
            self.close()
            raise
        self.input_arrived()

    def local_address(self, index: int) -> Address:
        return self.endpoints[index].local_address

    def input_arrived(self) -> None:
        """Something reached the application (or it must look again): poll it once, soon."""
        self._application_input = True
        self._machine_input()

    def _machine_input(self) -> None:
        """A datagram or a machine's timer reached a machine: one step, soon."""
        if not self._poll_scheduled and not self._closed:
            self._poll_scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._poll_scheduled = False
        if self._closed:
            return
        self.counters.pumps += 1
        machine_input = not self._application_input
        self._application_input = False
        if pump(
            self.application, self.machines, self, self._loop.time(), machine_input=machine_input
        ):
            self.counters.polls += 1

    def _socket_event(self, port: int, event: object) -> None:
        if isinstance(event, DeliveryFailed):
            port_unreachable(self.machines, port, event.address, event.cause, self.unreachable)
            self.input_arrived()
        if self._on_socket_event is not None:
            self._on_socket_event(event)

    # -- Transport (shoal.net.pump) ---------------------------------------------------

    def can_send(self, port: int) -> bool:
        return self._endpoint_at[port].can_send()

    def send(self, port: int, datagrams: list[tuple[bytes, Address]]) -> None:
        self._endpoint_at[port].send(datagrams)

    def arm(self, port: int | None, deadline: float | None) -> None:
        if port is not None:
            self._endpoint_at[port].arm(deadline)
            return
        if self._closed:
            return
        self._timer.arm(deadline)

    def _on_timer(self, _deadline: float) -> None:
        if self._closed:
            return
        self.counters.application_timer_fires += 1
        self.application.handle_timer(self._loop.time())
        self._application_input = True
        self._run()

    def wakeup_counters(self) -> dict[str, int]:
        """The runner's and its endpoints' wake-ups and system calls, as plain ints."""
        endpoints = self.endpoints
        return {
            "pumps": self.counters.pumps,
            "application_timer_fires": self.counters.application_timer_fires,
            "polls": self.counters.polls,
            "endpoint_timer_fires": sum(e.timer_counters.fires for e in endpoints),
            "receive_calls": sum(e.udp.counters.receive_calls for e in endpoints),
            "send_calls": sum(e.udp.counters.send_calls for e in endpoints),
        }

    def close(self) -> None:
        self._closed = True
        self._timer.cancel()
        for endpoint in self.endpoints:
            endpoint.close()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
