"""A machine on a busy host: now and then its process does not run for a while.

Theory of operation
-------------------
On a loaded machine a process waits for a core: in the lab at load 20-30 the shoal
sender's timers fired 1 ms late on average and up to 30-60 ms late. Meanwhile the
datagrams that reach it wait in its socket, and when it runs again it reads them all
before it sends anything: a batch of ACKs, each freeing part of the flight, with no
data sent between them. The simulator's hosts never wait, so a controller that misreads
such a batch (RFC 6817's max_allowed_cwnd cut the window to what the last ACK of the
batch left in flight) looked right there and not in the lab.

``StallingMachine`` wraps a machine bound to a simulated host and stops it for
``stall`` seconds at the start of every ``period`` (a regular pattern, so a run stays
a pure function of its inputs): datagrams that arrive then are held and handed over
together, at the stall's end, with the time of the stall's end; its timers fire no
earlier than that; it sends nothing meanwhile. The application's own calls on the
wrapped machine (its events, ``send_chunk``) are not stopped: only what crosses the
socket and the clock is.
"""

from __future__ import annotations

from shoal_dev.sim.network import Address, Machine


class StallingMachine:
    """``machine``, stopped for ``stall`` seconds at the start of every ``period``."""

    def __init__(self, machine: Machine, stall: float, period: float) -> None:
        if not 0.0 < stall < period:
            raise ValueError("a stall must be shorter than its period, and positive")
        self.machine = machine
        self.stall = stall
        self.period = period
        self._held: list[tuple[bytes, Address]] = []
        self._wake: float | None = None
        #: Datagrams that waited for the process, and stalls that held any.
        self.datagrams_held = 0

    def _stalled(self, now: float) -> bool:
        # A nanosecond's slack: the stall's end, computed back, must not read as stalled.
        return now % self.period < self.stall - 1e-9

    def _stall_end(self, now: float) -> float:
        return now - now % self.period + self.stall

    def _run(self, now: float) -> None:
        """The process runs again: it reads what waited in its socket, in order."""
        held, self._held, self._wake = self._held, [], None
        for data, address in held:
            self.machine.receive_datagram(data, address, now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if self._stalled(now):
            self._held.append((data, addr))
            self.datagrams_held += 1
            self._wake = self._stall_end(now)
            return
        self._run(now)
        self.machine.receive_datagram(data, addr, now)

    def handle_timer(self, now: float) -> None:
        if self._stalled(now):
            return
        self._run(now)
        deadline = self.machine.get_timer()
        if deadline is not None and deadline <= now:
            self.machine.handle_timer(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self._stalled(now):
            return []
        self._run(now)
        return self.machine.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        deadline = self.machine.get_timer()
        if deadline is not None and self._stalled(deadline):
            deadline = self._stall_end(deadline)
        if self._wake is not None and (deadline is None or self._wake < deadline):
            deadline = self._wake
        return deadline
