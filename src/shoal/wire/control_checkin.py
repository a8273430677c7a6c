"""Control messages of the check-in (``shoal.wire.control``): CHECKIN and its reply,
the server's NUDGE, and a device's INSTALL_REPORT, with their codecs."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from shoal.core.ids import ContentId
from shoal.wire.buffer import Buffer
from shoal.wire.control_fields import (
    MAX_BANNED,
    MAX_CHECKIN_ENTRIES,
    MAX_INSTALL_ATTEMPTS,
    MAX_OUTPUT_TAIL,
    InstallStatus,
    pull_str,
    push_str,
)
from shoal.wire.errors import MalformedDatagram
from shoal.wire.messages import pull_content_id, pull_enum


@dataclass(frozen=True, slots=True)
class ContentProgress:
    content_id: ContentId
    chunks_done: int
    chunk_count: int
    bytes_from_peers: int
    bytes_from_server: int


@dataclass(frozen=True, slots=True)
class CheckIn:
    content: tuple[ContentProgress, ...]


@dataclass(frozen=True, slots=True)
class CheckInReply:
    assignments_sha256: bytes
    assignments_length: int
    banned: tuple[str, ...] = ()
    """Peers banned in the client's office (reported by several devices): do not use."""


@dataclass(frozen=True, slots=True)
class Nudge:
    """The server's assignments changed: these are the new document's hash and length."""

    assignments_sha256: bytes
    assignments_length: int


@dataclass(frozen=True, slots=True)
class InstallReport:
    """A device says how the install of one content went (answered ``NOTED``)."""

    content_id: ContentId
    status: InstallStatus
    attempts: int
    exit_code: int | None
    output_tail: str = ""


def pull_checkin(buf: Buffer) -> CheckIn:
    count = buf.pull_uint8()
    if count > MAX_CHECKIN_ENTRIES:
        raise MalformedDatagram(f"{count} check-in entries (at most {MAX_CHECKIN_ENTRIES})")
    entries = tuple(
        ContentProgress(
            pull_content_id(buf),
            buf.pull_uint32(),
            buf.pull_uint32(),
            buf.pull_uint64(),
            buf.pull_uint64(),
        )
        for _ in range(count)
    )
    return CheckIn(entries)


def push_checkin(buf: Buffer, body: CheckIn) -> None:
    if len(body.content) > MAX_CHECKIN_ENTRIES:
        raise ValueError(f"at most {MAX_CHECKIN_ENTRIES} entries per check-in")
    buf.push_uint8(len(body.content))
    for entry in body.content:
        buf.push_bytes(entry.content_id.digest)
        buf.push_uint32(entry.chunks_done)
        buf.push_uint32(entry.chunk_count)
        buf.push_uint64(entry.bytes_from_peers)
        buf.push_uint64(entry.bytes_from_server)


def pull_checkin_reply(buf: Buffer) -> CheckInReply:
    digest, length = buf.pull_bytes(32), buf.pull_uint32()
    count = buf.pull_uint8()
    if count > MAX_BANNED:
        raise MalformedDatagram(f"{count} banned peers (at most {MAX_BANNED})")
    banned = tuple(str(ipaddress.IPv4Address(buf.pull_bytes(4))) for _ in range(count))
    return CheckInReply(digest, length, banned)


def push_checkin_reply(buf: Buffer, body: CheckInReply) -> None:
    push_nudge(buf, body)
    banned = body.banned[:MAX_BANNED]
    buf.push_uint8(len(banned))
    for ip in banned:
        try:
            buf.push_bytes(ipaddress.IPv4Address(ip).packed)
        except ValueError:
            raise MalformedDatagram(f"not an IPv4 address: {ip!r}") from None


def pull_nudge(buf: Buffer) -> Nudge:
    return Nudge(buf.pull_bytes(32), buf.pull_uint32())


def push_nudge(buf: Buffer, body: CheckInReply | Nudge) -> None:
    buf.push_bytes(body.assignments_sha256)
    buf.push_uint32(body.assignments_length)


def pull_install_report(buf: Buffer) -> InstallReport:
    content_id = pull_content_id(buf)
    status = pull_enum(buf, InstallStatus)
    attempts, exit_known = buf.pull_uint8(), buf.pull_uint8()
    if attempts > MAX_INSTALL_ATTEMPTS:
        raise MalformedDatagram(f"{attempts} install attempts (at most {MAX_INSTALL_ATTEMPTS})")
    if exit_known > 1:
        raise MalformedDatagram(f"exit_known is {exit_known}, not 0 or 1")
    (exit_code,) = struct.unpack(">q", buf.pull_bytes(8))
    tail = pull_str(buf, wide=True)
    return InstallReport(content_id, status, attempts, exit_code if exit_known else None, tail)


def push_install_report(buf: Buffer, body: InstallReport) -> None:
    if not 0 <= body.attempts <= MAX_INSTALL_ATTEMPTS:
        raise ValueError(f"attempts: 0 to {MAX_INSTALL_ATTEMPTS}")
    buf.push_bytes(body.content_id.digest)
    buf.push_uint8(body.status)
    buf.push_uint8(body.attempts)
    buf.push_uint8(0 if body.exit_code is None else 1)
    buf.push_bytes(struct.pack(">q", body.exit_code or 0))
    # The tail: its last bytes (what an administrator reads first), whole characters.
    encoded = body.output_tail.encode("utf-8")[-MAX_OUTPUT_TAIL:]
    push_str(buf, encoded.decode("utf-8", "ignore"), wide=True)
