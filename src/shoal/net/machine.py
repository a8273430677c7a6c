"""The shape every sans-I/O machine has, as the asyncio shell sees it.

The transfer engine, and later the discovery and rendezvous machines, never touch a
socket or a clock (the aioquic model, see STYLE.md). The shell only needs these five
methods to drive any of them; a structural ``Protocol`` keeps ``net/`` free of imports
from ``protocol/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from shoal.core.address import Address as Address  # re-exported: the shells import it here


class DatagramMachine(Protocol):
    """A sans-I/O state machine driven by datagrams, timers and the clock passed in."""

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        """Feed one received datagram from ``addr``."""

    def handle_timer(self, now: float) -> None:
        """Tell the machine that the time it asked for with ``get_timer`` has come."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Take the datagrams the machine wants on the wire now, in order."""

    def get_timer(self) -> float | None:
        """The time at which ``handle_timer`` should next be called, if any."""

    def next_event(self) -> object | None:
        """Take the oldest event the machine has for its user, or None."""


@runtime_checkable
class BatchMachine(Protocol):
    """A machine that also takes the datagrams of one wake-up in one call (the transfer
    engine): the shell then calls it once per batch rather than once per datagram."""

    def receive_datagrams(
        self, datagrams: Sequence[tuple[bytes | memoryview, Address]], now: float
    ) -> None:
        """Feed datagrams received together at ``now``, in order."""
