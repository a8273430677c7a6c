"""A simulated host's machine for the simulator's own tests: it keeps what it receives
and sends what a test puts in its outbox."""

from __future__ import annotations

from shoal_dev.sim.network import Address


class Recorder:
    """Records every datagram it receives, with its source and arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address, float]] = []
        self.outbox: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received.append((data, addr, now))

    def handle_timer(self, now: float) -> None:
        pass

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def arrivals(self) -> list[float]:
        """When each datagram arrived, in order."""
        return [now for _, _, now in self.received]
