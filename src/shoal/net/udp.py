"""Non-blocking UDP sockets: the Linux fast path (GSO/GRO) and a plain fallback.

Theory of operation
-------------------
A ``UdpSocket`` owns one non-blocking datagram socket and moves lists of
``(bytes, address)`` in and out of it; it knows nothing of message formats.

Sending. Consecutive datagrams to the same address whose sizes are equal (the last
one may be shorter) are handed to the kernel in one ``sendmsg`` call carrying a
``UDP_SEGMENT`` control message (UDP generic segmentation offload, Linux >= 4.18):
the kernel, or the network card, cuts the buffer back into datagrams of that size.
One system call then carries up to 64 datagrams (the kernel's ``UDP_MAX_SEGMENTS``)
and at most 65,507 bytes (the largest UDP payload over IPv4). The datagrams are
passed as separate buffers (scatter/gather), so nothing is joined in Python.

Receiving. With ``UDP_GRO`` enabled the kernel may deliver several datagrams of one
flow as one buffer and says the segment size in a control message; the buffer is
split back into datagrams with zero-copy ``memoryview`` slices. Each wake-up drains
about ``receive_batch`` datagrams (then the machine gets to answer, e.g. with acks,
before the next batch): a few system calls with GRO, one per datagram without.

Both offloads are detected at run time: a socket option that fails turns the path off
and the socket uses plain ``sendto`` / ``recvfrom``, which is also the path on every
system other than Linux and the path ``UdpConfig(gso=False, gro=False)`` selects. A GSO
send the kernel or the device refuses (``EIO``, ``EINVAL``, ``EMSGSIZE``, ...) turns GSO
off for the socket and the same datagrams are sent again one by one.

Errors. ``EAGAIN`` and ``ENOBUFS`` on send stop the send and are returned to the
caller as back-pressure, never dropped. ``IP_RECVERR`` is set so that ICMP errors
(port or host unreachable) are queued on the socket; they are read from the error
queue and reported as ``(address, cause)`` pairs in ``unreachable``. Any other error
on one send is recorded in ``send_failures`` (the datagram is not sent, and the caller
is told), and the following datagrams still go out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from shoal.core.portable import LINUX_PATHS, SWITCH_VARIABLE
from shoal.net.errors import (
    DatagramTooLarge,
    InterfaceQueueFull,
    NetworkError,
    OffloadRejected,
    PeerUnreachableError,
    SendQueueFull,
    classify_socket_error,
    map_socket_errors,
)
from shoal.net.machine import Address

# Linux values; the socket module of Python 3.11 does not name them.
SOL_UDP = 17
UDP_SEGMENT = 103  # include/uapi/linux/udp.h
UDP_GRO = 104
SO_SNDBUFFORCE = 32  # include/uapi/asm-generic/socket.h
SO_RCVBUFFORCE = 33
IP_RECVERR = 11  # include/uapi/linux/in.h
IPV6_RECVERR = 25
MSG_ERRQUEUE = 0x2000

MAX_GSO_SEGMENTS = 64  # UDP_MAX_SEGMENTS in include/linux/udp.h
MAX_UDP_PAYLOAD = 65507  # 65535 - 20 (IPv4 header) - 8 (UDP header)
RECEIVE_BUFFER_SIZE = 65536  # a GRO buffer never exceeds one 64 KiB IP packet
MIB = 1024 * 1024

_SEGMENT_SIZE = struct.Struct("=H")  # the UDP_SEGMENT control message is a u16
# The UDP_GRO control message is an int. (No CMSG_SPACE on Windows, and no GRO either.)
_GRO_ANCILLARY_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_MAX_UNREACHABLE_RETRIES = 4


@dataclass(frozen=True, slots=True)
class UdpConfig:
    """How to open a UDP socket.

    ``gso`` / ``gro`` ask for the Linux offloads (used only where the kernel accepts
    them); the buffer sizes are requested with the ``*FORCE`` options when running as
    root, else capped by ``net.core.rmem_max`` / ``wmem_max``.
    """

    gso: bool = True
    gro: bool = True
    receive_buffer_bytes: int = 16 * MIB
    send_buffer_bytes: int = 8 * MIB
    broadcast: bool = False
    #: Datagrams drained per wake-up before the machine answers (acks): small enough
    #: that acks leave within a fraction of a millisecond, large enough to amortise
    #: the event loop's cost per wake-up.
    receive_batch: int = 256

    @classmethod
    def plain(cls) -> UdpConfig:
        """The fallback path: no offload, one system call per datagram."""
        return cls(gso=False, gro=False)


@dataclass(slots=True)
class SocketCounters:
    """What went through one socket, for reports and benchmarks."""

    datagrams_sent: int = 0
    bytes_sent: int = 0
    send_calls: int = 0
    gso_send_calls: int = 0
    send_blocked: int = 0
    datagrams_received: int = 0
    bytes_received: int = 0
    receive_calls: int = 0
    gro_buffers: int = 0
    unreachable_reports: int = 0
    send_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready mapping."""
        return dataclasses.asdict(self)


class SendOutcome(NamedTuple):
    """How far a ``send`` got: the index of the first datagram not sent, and why."""

    next_index: int
    blocked_by: NetworkError | None


@dataclass(frozen=True, slots=True)
class SendFailure:
    """A datagram the kernel refused for good (not back-pressure)."""

    address: Address
    error: NetworkError


@dataclass(slots=True)
class UdpSocket:
    """One non-blocking UDP socket with GSO/GRO where the kernel has them."""

    sock: socket.socket
    config: UdpConfig
    gso_enabled: bool = False
    gro_enabled: bool = False
    offload_note: str = ""
    counters: SocketCounters = field(default_factory=SocketCounters)
    unreachable: list[tuple[Address, str]] = field(default_factory=list)
    send_failures: list[SendFailure] = field(default_factory=list)

    @classmethod
    def bind(cls, host: str, port: int, config: UdpConfig | None = None) -> UdpSocket:
        """Open a non-blocking UDP socket bound to ``host:port`` (port 0: any free one)."""
        config = config or UdpConfig()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, config.receive_buffer_bytes)
            _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, config.send_buffer_bytes)
            if config.broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if LINUX_PATHS:
                level, option = (
                    (socket.IPPROTO_IPV6, IPV6_RECVERR)
                    if family == socket.AF_INET6
                    else (socket.IPPROTO_IP, IP_RECVERR)
                )
                sock.setsockopt(level, option, 1)
            with map_socket_errors(f"binding UDP {host}:{port}"):
                sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        udp = cls(sock=sock, config=config)
        udp._detect_offload()
        return udp

    def _detect_offload(self) -> None:
        """Turn on GSO and GRO where the kernel accepts them; note why not otherwise."""
        notes = []
        if not LINUX_PATHS:
            notes.append(f"no UDP offload on {sys.platform} (or {SWITCH_VARIABLE} is set)")
        else:
            if self.config.gso:
                try:
                    self.sock.getsockopt(SOL_UDP, UDP_SEGMENT)
                    self.gso_enabled = True
                except OSError as error:
                    notes.append(f"GSO unavailable: {error.strerror}")
            if self.config.gro:
                try:
                    self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                    self.gro_enabled = True
                except OSError as error:
                    notes.append(f"GRO unavailable: {error.strerror}")
        self.offload_note = "; ".join(notes)

    @property
    def local_address(self) -> Address:
        """The (host, port) the socket is bound to."""
        host, port = self.sock.getsockname()[:2]
        return (host, port)

    @property
    def buffer_sizes(self) -> tuple[int, int]:
        """The (receive, send) buffer sizes the kernel granted."""
        return (
            self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )

    def fileno(self) -> int:
        """The socket's file descriptor, for the event loop."""
        return self.sock.fileno()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    # -- sending ---------------------------------------------------------------------

    def send(self, datagrams: Sequence[tuple[bytes, Address]], start: int = 0) -> SendOutcome:
        """Send ``datagrams[start:]`` in order, batching with GSO where possible.

        Returns where it stopped: ``len(datagrams)`` when all went out, else the index
        of the first unsent datagram and the back-pressure error that stopped it.
        """
        sock = self.sock
        counters = self.counters
        index = start
        count = len(datagrams)
        unreachable_retries = 0
        while index < count:
            data, address = datagrams[index]
            size = len(data)
            end = index + 1
            if self.gso_enabled:
                end = self._gso_batch_end(datagrams, index, size, address)
            try:
                if end - index == 1:
                    sock.sendto(data, address)
                    sent_bytes = size
                else:
                    sent_bytes = sock.sendmsg(
                        [payload for payload, _ in datagrams[index:end]],
                        [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))],
                        0,
                        address,
                    )
                    counters.gso_send_calls += 1
            except BlockingIOError:
                counters.send_blocked += 1
                return SendOutcome(
                    index, SendQueueFull(f"send buffer full sending to {address}", errno.EAGAIN)
                )
            except OSError as raw_error:
                error = classify_socket_error(raw_error, f"sending to {address[0]}:{address[1]}")
                if isinstance(error, InterfaceQueueFull):
                    counters.send_blocked += 1
                    return SendOutcome(index, error)
                if (
                    isinstance(error, PeerUnreachableError)
                    and unreachable_retries < _MAX_UNREACHABLE_RETRIES
                ):
                    # With IP_RECVERR a pending ICMP error fails the *next* send, whatever
                    # its destination, and that datagram did not go out: read the error
                    # queue (it names the real destination) and send this one again.
                    unreachable_retries += 1
                    self.drain_error_queue()
                    continue
                if end - index > 1 and (
                    isinstance(error, OffloadRejected | DatagramTooLarge)
                    or raw_error.errno == errno.EINVAL
                ):
                    self.gso_enabled = False
                    self.offload_note = f"GSO turned off after the kernel refused it: {error}"
                    continue
                counters.send_failures += 1
                self.send_failures.extend(
                    SendFailure(destination, error) for _, destination in datagrams[index:end]
                )
                index = end
                continue
            counters.send_calls += 1
            counters.datagrams_sent += end - index
            counters.bytes_sent += sent_bytes
            unreachable_retries = 0
            index = end
        return SendOutcome(index, None)

    @staticmethod
    def _gso_batch_end(
        datagrams: Sequence[tuple[bytes, Address]], start: int, size: int, address: Address
    ) -> int:
        """End (exclusive) of the GSO batch that begins at ``start``."""
        if size == 0:
            return start + 1
        limit = min(len(datagrams), start + min(MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD // size))
        end = start + 1
        while end < limit:
            next_data, next_address = datagrams[end]
            if next_address != address:
                break
            next_size = len(next_data)
            if next_size != size:
                if 0 < next_size < size:
                    end += 1  # a shorter last segment is allowed; it closes the batch
                break
            end += 1
        return end

    # -- receiving -------------------------------------------------------------------

    def receive(self) -> list[tuple[bytes | memoryview, Address]]:
        """Drain the socket until about ``config.receive_batch`` datagrams are in."""
        received: list[tuple[bytes | memoryview, Address]] = []
        sock = self.sock
        counters = self.counters
        gro = self.gro_enabled
        batch = self.config.receive_batch
        woke_empty = True
        while len(received) < batch:
            try:
                if gro:
                    data, ancillary, _flags, source = sock.recvmsg(
                        RECEIVE_BUFFER_SIZE, _GRO_ANCILLARY_SPACE
                    )
                else:
                    data, source = sock.recvfrom(RECEIVE_BUFFER_SIZE)
                    ancillary = None
            except BlockingIOError:
                if woke_empty:
                    # Woken with nothing to read: the wake-up may be an ICMP error alone.
                    self.drain_error_queue()
                break
            except OSError as raw_error:
                error = classify_socket_error(raw_error, "receiving")
                if isinstance(error, PeerUnreachableError):
                    self.drain_error_queue()
                    continue
                raise error from raw_error
            woke_empty = False
            counters.receive_calls += 1
            address: Address = (source[0], source[1])
            length = len(data)
            counters.bytes_received += length
            segment_size = _gro_segment_size(ancillary) if ancillary else 0
            if 0 < segment_size < length:
                counters.gro_buffers += 1
                view = memoryview(data)
                received.extend(
                    [
                        (view[offset : offset + segment_size], address)
                        for offset in range(0, length, segment_size)
                    ]
                )
            else:
                received.append((data, address))
        counters.datagrams_received += len(received)
        return received

    def drain_error_queue(self) -> None:
        """Move the ICMP errors queued on the socket into ``unreachable``."""
        if not LINUX_PATHS:
            return
        while True:
            try:
                _payload, ancillary, _flags, destination = self.sock.recvmsg(0, 512, MSG_ERRQUEUE)
            except OSError:
                return  # EAGAIN: the queue is empty
            cause = "unreachable"
            for _level, _type, data in ancillary:
                if len(data) >= 4:
                    # struct sock_extended_err starts with the u32 ee_errno.
                    code = int.from_bytes(data[:4], sys.byteorder)
                    cause = errno.errorcode.get(code, cause)
            if destination:
                self.counters.unreachable_reports += 1
                self.unreachable.append(((destination[0], destination[1]), cause))


def _gro_segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size of a GRO buffer, from its ``UDP_GRO`` control message."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder)
    return 0


def _set_buffer(sock: socket.socket, force_option: int, option: int, size: int) -> None:
    """Ask for a ``size``-byte buffer: past the sysctl cap when allowed (root)."""
    if LINUX_PATHS:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force_option, size)
            return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
