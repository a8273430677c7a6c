"""The asyncio shell: sans-I/O machines on real UDP sockets.

``DatagramEndpoint`` drives any ``DatagramMachine`` (the transfer engine, discovery,
rendezvous) from a ``UdpSocket``, which uses UDP GSO/GRO on Linux when the kernel has
them and plain ``sendto``/``recvfrom`` otherwise.
"""

from shoal.net.endpoint import DatagramEndpoint, EventHandler, LossCounters
from shoal.net.errors import (
    AddressUnavailable,
    DatagramTooLarge,
    InterfaceQueueFull,
    NetworkError,
    OffloadRejected,
    OperationNotPermitted,
    PeerUnreachableError,
    SendQueueFull,
    classify_socket_error,
    map_socket_errors,
)
from shoal.net.events import DatagramRefused, DeliveryFailed, SocketFailed
from shoal.net.machine import Address, DatagramMachine
from shoal.net.udp import SendOutcome, SocketCounters, UdpConfig, UdpSocket

__all__ = [
    "Address",
    "AddressUnavailable",
    "DatagramEndpoint",
    "DatagramMachine",
    "DatagramRefused",
    "DatagramTooLarge",
    "DeliveryFailed",
    "EventHandler",
    "InterfaceQueueFull",
    "LossCounters",
    "NetworkError",
    "OffloadRejected",
    "OperationNotPermitted",
    "PeerUnreachableError",
    "SendOutcome",
    "SendQueueFull",
    "SocketCounters",
    "SocketFailed",
    "UdpConfig",
    "UdpSocket",
    "classify_socket_error",
    "map_socket_errors",
]
