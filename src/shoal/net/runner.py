"""Run an application of several sans-I/O machines on real UDP sockets.

``AgentCore`` (client) and ``ServerNode`` (server) own several machines, one per port,
and read their events themselves in ``poll(now)``; they also have a timer of their
own. ``ApplicationRunner`` is their asyncio shell, the twin of the simulator's host:

* each machine gets a ``DatagramEndpoint`` through a thin proxy that hides its events
  from the endpoint (the application reads them) and notes that input arrived;
* after input, one ``poll`` runs on the next loop iteration (coalesced), then every
  endpoint transmits what the machines queued, and the application's timer is re-armed;
* the application's own timer calls ``handle_timer`` and the same steps.

Time is ``loop.time()``, as in the endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.net.endpoint import DatagramEndpoint, EventHandler
from shoal.net.machine import Address, DatagramMachine
from shoal.net.udp import UdpConfig


class Application(Protocol):
    def poll(self, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Binding:
    """One machine on one socket: where to bind, and how."""

    machine: Any
    host: str
    port: int
    config: UdpConfig | None = None


class _Proxy:
    """The machine as its endpoint sees it: events withheld, input reported."""

    def __init__(self, machine: DatagramMachine, runner: ApplicationRunner) -> None:
        self._machine = machine
        self._runner = runner

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        self._machine.receive_datagram(data, addr, now)
        self._runner.input_arrived()

    def handle_timer(self, now: float) -> None:
        self._machine.handle_timer(now)
        self._runner.input_arrived()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self._machine.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self._machine.get_timer()

    def next_event(self) -> object | None:
        return None


class ApplicationRunner:
    """Bind every machine of ``application`` and drive them on the running loop."""

    def __init__(
        self,
        application: Application,
        bindings: list[Binding],
        on_socket_event: EventHandler | None = None,
    ) -> None:
        self.application = application
        self._loop = asyncio.get_running_loop()
        self._poll_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        self.endpoints: list[DatagramEndpoint] = []
        try:
            for binding in bindings:
                endpoint = DatagramEndpoint.open(
                    _Proxy(binding.machine, self),
                    binding.host,
                    binding.port,
                    on_socket_event,
                    config=binding.config,
                )
                self.endpoints.append(endpoint)
        except BaseException:
            self.close()
            raise
        self.input_arrived()

    def local_address(self, index: int) -> Address:
        return self.endpoints[index].local_address

    def input_arrived(self) -> None:
        """Something reached a machine: poll the application once, soon."""
        if not self._poll_scheduled and not self._closed:
            self._poll_scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._poll_scheduled = False
        if self._closed:
            return
        now = self._loop.time()
        self.application.poll(now)
        for endpoint in self.endpoints:
            endpoint.transmit()
        self._arm()

    def _arm(self) -> None:
        deadline = self.application.get_timer()
        if self._timer is not None and self._timer_at != deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and deadline is not None:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self.application.handle_timer(self._loop.time())
        self._run()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for endpoint in self.endpoints:
            endpoint.close()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
