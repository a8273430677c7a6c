"""Network probes of ``shoal doctor``: bind a port, hear a broadcast, ask a P2P server.

Blocking, with short timeouts: the doctor is a command, not a service.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import time
from dataclasses import dataclass

from shoal.client.control import (
    CertificateRejected,
    ControlAnswered,
    ControlClient,
    ControlTimedOut,
    RefusedUnauthenticated,
    ServerCertified,
)
from shoal.core.errors import ShoalError
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.signing import VerifyKey
from shoal.wire.control import Refused, Registered
from shoal.wire.messages import VersionError, WhoHas, decode_datagram, encode_datagram

PROBE_VERSION = 255
"""The protocol version of the broadcast probe: one no peer speaks, so every peer that
hears it answers ``VERSION_ERROR`` (a peer never stays silent on an unknown version)."""


def bind_error(address: str, port: int, kind: int = socket.SOCK_DGRAM) -> OSError | None:
    """None if ``port`` can be bound on ``address`` now, else the error."""
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((address, port))
        except OSError as error:
            return error
    return None


def in_use(error: OSError) -> bool:
    return error.errno == errno.EADDRINUSE


def broadcast_address(ip: str, prefix: int) -> str:
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).broadcast_address)


def broadcast_probe(ip: str, prefix: int, port: int, timeout: float = 2.0) -> list[str]:
    """Broadcast a probe to ``port`` on the subnet; the addresses of the peers that
    answered (none: broadcast does not get through, or no shoal device listens)."""
    probe = encode_datagram(
        WhoHas(int.from_bytes(os.urandom(4), "big"), ContentId(bytes(32)), padding=64),
        version=PROBE_VERSION,
    )
    answered: set[str] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((ip, 0))
        deadline = time.monotonic() + timeout
        for target in {broadcast_address(ip, prefix), "255.255.255.255"}:
            try:
                sock.sendto(probe, (target, port))
            except OSError:
                continue
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                break
            data, source = sock.recvfrom(2048)
            if source[0] == ip:
                continue
            try:
                message = decode_datagram(data)
            except ShoalError:  # anything else on that port is not an answer
                continue
            if isinstance(message, VersionError):
                answered.add(source[0])
    return sorted(answered)


@dataclass(frozen=True, slots=True)
class ServerAnswer:
    """What a P2P server said to a REGISTER: one of these is set."""

    certified: bool = False
    certificate_problem: str = ""
    registered: Registered | None = None
    refused: Refused | None = None
    refused_unauthenticated: RefusedUnauthenticated | None = None
    silent: bool = False
    answered_anything: bool = False


def ask_server(
    server: tuple[str, int],
    device_key: DeviceKey,
    enrollment_token: bytes,
    console_keys: list[bytes],
    who: tuple[str, str, int],
    local_ip: str,
    timeout: float = 4.0,
) -> ServerAnswer:
    """HELLO (the certificate, checked against the pinned console key), then REGISTER
    as the agent would (``who``: version, hostname, subnet prefix); what came back
    within ``timeout``."""
    now = time.monotonic
    control = ControlClient(
        server=server,
        device_key=device_key,
        enrollment_token=enrollment_token,
        console_keys=[VerifyKey.from_raw(key) for key in console_keys],
        now=now(),
        counter_start=time.time_ns() // 1000,
        wall_offset=time.time() - now(),
        give_up_after=timeout,
    )
    certified, certificate_problem, heard = False, "", False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_ip, 0))
        version, hostname, prefix = who
        # Held until the certificate is in: the control key comes from the server's key.
        request_id = control.register(version, hostname, prefix, now())
        deadline = now() + timeout
        while now() < deadline:
            control.handle_timer(now())
            for data, address in control.datagrams_to_send(now()):
                with contextlib.suppress(OSError):
                    sock.sendto(data, address)
            wait = max(0.0, min(0.1, deadline - now()))
            readable, _, _ = select.select([sock], [], [], wait)
            if readable:
                data, source = sock.recvfrom(65536)
                heard = heard or source[0] == server[0]
                control.receive_datagram(data, (source[0], source[1]), now())
            while (event := control.next_event()) is not None:
                if isinstance(event, ServerCertified):
                    certified = True
                elif isinstance(event, CertificateRejected):
                    certificate_problem = event.reason
                elif isinstance(event, RefusedUnauthenticated):
                    return ServerAnswer(
                        certified,
                        certificate_problem,
                        refused_unauthenticated=event,
                        answered_anything=True,
                    )
                elif isinstance(event, ControlAnswered) and event.request_id == request_id:
                    if isinstance(event.reply, Registered):
                        return ServerAnswer(
                            certified, registered=event.reply, answered_anything=True
                        )
                    if isinstance(event.reply, Refused):
                        return ServerAnswer(certified, refused=event.reply, answered_anything=True)
                elif isinstance(event, ControlTimedOut):
                    break
    return ServerAnswer(certified, certificate_problem, silent=not heard, answered_anything=heard)
