"""Socket errors translated at the boundary, grouped by cause (httpcore style).

Inside ``net/`` a failed system call raises ``OSError`` with an errno; callers above
the shell should only ever see these named causes. ``classify_socket_error`` does the
mapping; ``map_socket_errors`` wraps a block with it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from shoal.core.errors import ShoalError


class NetworkError(ShoalError):
    """A socket operation failed. Subclasses name the cause."""

    def __init__(self, message: str, errno_code: int | None = None) -> None:
        super().__init__(message)
        self.errno_code = errno_code


class SendQueueFull(NetworkError):
    """The socket send buffer is full (EAGAIN): retry when the socket is writable."""


class InterfaceQueueFull(NetworkError):
    """The interface or qdisc queue is full (ENOBUFS): retry after a short pause.

    Unlike ``SendQueueFull`` the socket may still poll writable, so waiting for
    writability would spin; the shell retries on a timer instead.
    """


class PeerUnreachableError(NetworkError):
    """An ICMP error said an earlier datagram could not be delivered."""


class DatagramTooLarge(NetworkError):
    """A datagram (or a GSO batch) exceeds what the route or the kernel accepts."""


class OffloadRejected(NetworkError):
    """The kernel or the device refused UDP segmentation offload for this send."""


class AddressUnavailable(NetworkError):
    """The local address cannot be bound: in use, or not configured on this host."""


class OperationNotPermitted(NetworkError):
    """Not allowed: a privileged port, a broadcast without ``broadcast=True``, a firewall."""


_CAUSE_BY_ERRNO: dict[int, type[NetworkError]] = {
    errno.EAGAIN: SendQueueFull,
    errno.ENOBUFS: InterfaceQueueFull,
    errno.ECONNREFUSED: PeerUnreachableError,
    errno.EHOSTUNREACH: PeerUnreachableError,
    errno.ENETUNREACH: PeerUnreachableError,
    errno.EHOSTDOWN: PeerUnreachableError,
    errno.EMSGSIZE: DatagramTooLarge,
    errno.EIO: OffloadRejected,
    errno.EOPNOTSUPP: OffloadRejected,
    errno.EADDRINUSE: AddressUnavailable,
    errno.EADDRNOTAVAIL: AddressUnavailable,
    errno.EACCES: OperationNotPermitted,
    errno.EPERM: OperationNotPermitted,
}


def classify_socket_error(error: OSError, doing: str) -> NetworkError:
    """The named error for ``error``, with a message saying what we were ``doing``."""
    cause = _CAUSE_BY_ERRNO.get(error.errno or 0, NetworkError)
    name = errno.errorcode.get(error.errno or 0, "unknown error")
    return cause(f"{doing}: {error.strerror or error} ({name})", error.errno)


@contextmanager
def map_socket_errors(doing: str) -> Iterator[None]:
    """Re-raise any ``OSError`` inside the block as its named ``NetworkError``."""
    try:
        yield
    except OSError as error:
        raise classify_socket_error(error, doing) from error
