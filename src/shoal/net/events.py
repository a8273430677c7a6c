"""Events the shell itself reports, beside the events of the machine it drives.

They reach the same ``on_event`` handler as the machine's events, named in the past
tense like them.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.net.machine import Address


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """The network said a datagram sent to ``address`` could not be delivered.

    It comes from an ICMP error the kernel queued on the socket (``IP_RECVERR``);
    ``cause`` is the errno name: ``ECONNREFUSED`` (port closed), ``EHOSTUNREACH``,
    ``ENETUNREACH``, or ``EMSGSIZE`` (too big for the path).
    """

    address: Address
    cause: str


@dataclass(frozen=True, slots=True)
class DatagramRefused:
    """The local kernel refused a datagram for good (not back-pressure): it was not sent.

    ``cause`` is the translated error, e.g. a broadcast address without
    ``UdpConfig(broadcast=True)`` (``OperationNotPermitted``, EACCES).
    """

    address: Address
    cause: str


@dataclass(frozen=True, slots=True)
class SocketFailed:
    """Receiving failed for a reason other than an ICMP error; the endpoint closed."""

    cause: str
