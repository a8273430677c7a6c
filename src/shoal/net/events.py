"""Events the shell itself reports, beside the events of the machine it drives."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.net.machine import Address


@dataclass(frozen=True, slots=True)
class PeerUnreachable:
    """The network said a datagram sent to ``address`` cannot be delivered.

    It comes from an ICMP error (port or host unreachable) that the kernel queued on the
    socket; ``cause`` is the errno name, e.g. ``ECONNREFUSED`` for a closed port.
    """

    address: Address
    cause: str
