"""Control datagrams between a client and its P2P server, authenticated per device.

Theory of operation
-------------------
Control datagrams share the four-byte prefix of every shoal datagram (magic ``SH``,
protocol version, type) with types 0x20..0x3F, then::

    request_id u32, device_id 16 B, counter u64, body (by type), tag 16 B

``tag`` is HMAC-SHA256 (truncated to 16 bytes) over everything before it, keyed by the
*control key* of this device and this server (``shoal.core.identity.control_key``:
X25519 of the device key and the console-certified server key, through HKDF-SHA256
salted with the enrollment token). Only the device and its server hold that key, so a
tag proves who sent the datagram; the device ID is bound to the device's public key
(``device_id_of``), so a device can only speak for itself. ``counter`` grows with
every datagram a sender sends to one peer; the receiver refuses one that is not above
the last it accepted (a replay).

Three exceptions carry no valid tag (16 zero bytes): ``HELLO`` (a client asks for the
server's certificate, padded so that the answer is at most 3x its size), the server's
``CERTIFICATE`` (signed by the console, checked by the client against the console key
pinned at enrollment), and an unauthenticated ``REFUSED`` that the server sends when it
cannot check a datagram (unknown device, wrong enrollment token, outdated certificate),
so that the client can tell the user what is wrong. A client shows, but never acts on,
an unauthenticated reply except by asking again (a new certificate, a new REGISTER),
which decides nothing. A datagram whose tag does not verify raises
``AuthenticationFailed``. Strings are UTF-8 with a u8 (short) or u16 (message) length.

Every exchange is a client's request and the server's reply, but for ``NUDGE``: the
server sends it unasked to its registered clients when the assignments change, so a new
assignment starts within a round trip instead of at the next check-in. A lost nudge
costs only that wait; a replayed one is refused by its counter.

Bulky things (the console's signed assignment document, manifests) are not control
datagrams: the server announces their SHA-256 and length, and the client fetches them
as single-chunk blobs through the transfer engine, which verifies the hash.

===============  ====  ================================================================
type             code  body
===============  ====  ================================================================
LEASE            0x20  content_id 32 B
LEASE_REPLY      0x21  content_id 32 B, decision u8, holder ip 4 B, holder port u16,
                       valid_ms u32, stripes u8, stripe_mask u64 (GRANTED: fetch chunk
                       i over the WAN when bit i % stripes of the mask is set;
                       1 <= stripes <= 64)
HELLO            0x22  padding (zeros) up to ``HELLO_SIZE`` bytes; no tag
CERTIFICATE      0x23  certificate_length u16, certificate (``shoal.core.server_cert``),
                       address_token 16 B (proves the asker receives at its address);
                       no tag
REGISTER         0x30  public_key 32 B, version str8, hostname str8, subnet_prefix u8,
                       address_token 16 B (from a recent CERTIFICATE)
REGISTERED       0x31  version str8, office str8, office_type u8,
                       checkin_s u16, discovery_port u16, data_port u16,
                       background_port u16, licence_state u8, seats_over u32,
                       alternative ports 4 x u16 (discovery, control, data,
                       background; 0 = none), foreground_kbps u32,
                       background_kbps u32 (0 = unlimited), max_downloads u16
                       (0 = no limit)
CHECKIN          0x32  count u8, count x (content_id 32 B, chunks_done u32,
                       chunk_count u32, from_peers u64, from_server u64)
CHECKIN_REPLY    0x33  assignments_sha256 32 B, assignments_length u32, count u8,
                       count x banned peer ip 4 B (peers banned in the office)
MANIFEST_INFO    0x34  content_id 32 B
MANIFEST_REPLY   0x35  content_id 32 B, manifest_sha256 32 B, manifest_length u32
PEERS            0x36  content_id 32 B, padding (zeros: the answer is <= 3x the request)
PEER_LIST        0x37  content_id 32 B, count u8, count x (ip 4 B, port u16)
BAD_PEER         0x38  content_id 32 B, peer ip 4 B, peer port u16, chunk_index u32
NOTED            0x39  (empty)
NUDGE            0x3A  assignments_sha256 32 B, assignments_length u32 (server ->
                       client, request_id 0: the assignments changed, check in now)
INSTALL_REPORT   0x3B  content_id 32 B, status u8, attempts u8, exit_known u8 (0/1),
                       exit_code i64 (0 when unknown), output_tail str16 (the last
                       ``MAX_OUTPUT_TAIL`` bytes of the command's output); answered
                       NOTED
REFUSED          0x3F  reason u8, message str16
===============  ====  ================================================================
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from shoal.core.ids import ContentId
from shoal.core.stripes import MAX_STRIPES
from shoal.wire.buffer import Buffer
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic
from shoal.wire.messages import (
    MAGIC,
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    pull_content_id,
    pull_enum,
)

DEVICE_ID_SIZE = 16
TAG_SIZE = 16
MAX_CHECKIN_ENTRIES = 16
MAX_PEERS = 128
MAX_MESSAGE_LENGTH = 1024
MAX_BANNED = 32
PUBLIC_KEY_SIZE = 32
MAX_CERTIFICATE = 512
MAX_OUTPUT_TAIL = MAX_MESSAGE_LENGTH
"""The bytes of an install command's output an INSTALL_REPORT carries (the client keeps
4 KiB; the datagram stays under the usual MTU)."""
MAX_INSTALL_ATTEMPTS = 16
HELLO_SIZE = 128
"""A client pads its HELLO to this size: the CERTIFICATE answer (at most 305 bytes, with
a server ID and a name of 64 bytes) stays under 3x the request: the server is no
reflector."""
ADDRESS_TOKEN_SIZE = 16
_HEADER = struct.Struct(">2sBBI16sQ")
HEADER_SIZE = _HEADER.size
_NO_TAG = bytes(TAG_SIZE)


class AuthenticationFailed(MalformedDatagram):
    """The datagram's tag does not match: another device, token or server key."""


class ControlType(enum.IntEnum):
    LEASE = 0x20
    LEASE_REPLY = 0x21
    HELLO = 0x22
    CERTIFICATE = 0x23
    REGISTER = 0x30
    REGISTERED = 0x31
    CHECKIN = 0x32
    CHECKIN_REPLY = 0x33
    MANIFEST_INFO = 0x34
    MANIFEST_REPLY = 0x35
    PEERS = 0x36
    PEER_LIST = 0x37
    BAD_PEER = 0x38
    NOTED = 0x39
    NUDGE = 0x3A
    INSTALL_REPORT = 0x3B
    REFUSED = 0x3F


class OfficeType(enum.IntEnum):
    """How a client's office shares content (the console's topology)."""

    DEFAULT = 0  # broadcast discovery on the subnet
    WIFI = 1  # unicast peer lists from the server
    VPN = 2  # never shares: server only
    NONE = 3  # in no known office: server only, if policy allows


class LicenceState(enum.IntEnum):
    OK = 0
    OVERAGE = 1  # more seats used than bought: allowed, and said everywhere


class LeaseDecision(enum.IntEnum):
    GRANTED = 0  # fetch from the server: you are the office's rendezvous point
    REDIRECTED = 1  # fetch from the holder (and other peers) instead
    DIRECT = 2  # your office does not share: fetch from the server


class InstallStatus(enum.IntEnum):
    """Where one install stands on a device (``shoal.client.install``); pending and
    downloading are not reported this way: the check-in's progress says them."""

    INSTALLING = 1  # detection, an attempt, or the wait before the next attempt
    INSTALLED = 2
    FAILED = 3
    REBOOT_REQUIRED = 4
    UNINSTALLING = 5
    UNINSTALLED = 6
    UNINSTALL_FAILED = 7


class RefusalCause(enum.IntEnum):
    AUTHENTICATION_FAILED = 1  # unauthenticated: wrong token, or an outdated certificate
    UNKNOWN_DEVICE = 2
    NOT_LICENSED = 3
    LICENCE_EXPIRED = 4
    VERSION_UNSUPPORTED = 5
    NOT_ACTIVATED = 6
    UNKNOWN_CONTENT = 7
    NOT_ASSIGNED = 8
    INVALID_REQUEST = 9
    REPLAYED = 10  # the counter is not above the last one accepted from this device
    NO_CERTIFICATE = 11  # the server has no certificate from its console yet
    ADDRESS_UNPROVEN = 13  # REGISTER without a recent address token: ask HELLO again
    RATE_LIMITED = 12  # too many new devices from one address (or in all)


@dataclass(frozen=True, slots=True)
class Hello:
    """A client asks for the server's certificate (padded: see ``HELLO_SIZE``)."""

    padding: int = HELLO_SIZE - HEADER_SIZE - TAG_SIZE


@dataclass(frozen=True, slots=True)
class Certificate:
    """The server's certificate, signed by the console (``shoal.core.server_cert``), and
    a token that proves, when a REGISTER echoes it, that the asker receives there."""

    certificate: bytes
    address_token: bytes = bytes(ADDRESS_TOKEN_SIZE)


@dataclass(frozen=True, slots=True)
class Register:
    public_key: bytes
    version: str
    hostname: str
    subnet_prefix: int
    address_token: bytes = bytes(ADDRESS_TOKEN_SIZE)
    """Echoed from the server's CERTIFICATE: the device receives at its source address."""


@dataclass(frozen=True, slots=True)
class Registered:
    version: str
    office: str
    office_type: OfficeType
    checkin_seconds: int
    discovery_port: int
    data_port: int
    background_port: int
    licence_state: LicenceState
    seats_over: int
    alternative_ports: tuple[int, int, int, int] = (0, 0, 0, 0)
    foreground_kbps: int = 0
    background_kbps: int = 0
    max_downloads: int = 0


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
class ManifestInfo:
    content_id: ContentId


@dataclass(frozen=True, slots=True)
class ManifestReply:
    content_id: ContentId
    manifest_sha256: bytes
    manifest_length: int


@dataclass(frozen=True, slots=True)
class Lease:
    content_id: ContentId


@dataclass(frozen=True, slots=True)
class LeaseReply:
    content_id: ContentId
    decision: LeaseDecision
    holder: tuple[str, int]
    valid_ms: int
    stripes: int = 1
    """The office's WAN copy is split in this many stripes (``shoal.core.stripes``)."""
    stripe_mask: int = 1
    """GRANTED: the stripes this client fetches from the server (bit s: stripe s)."""


@dataclass(frozen=True, slots=True)
class Peers:
    content_id: ContentId
    padding: int = 0
    """Zeros after the content ID: the server's peer list fits in 3x the request."""


@dataclass(frozen=True, slots=True)
class PeerList:
    content_id: ContentId
    peers: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class BadPeer:
    content_id: ContentId
    peer: tuple[str, int]
    chunk_index: int


@dataclass(frozen=True, slots=True)
class Noted:
    pass


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


@dataclass(frozen=True, slots=True)
class Refused:
    cause: RefusalCause
    message: str


ControlBody = (
    Hello
    | Certificate
    | Register
    | Registered
    | CheckIn
    | CheckInReply
    | ManifestInfo
    | ManifestReply
    | Lease
    | LeaseReply
    | Peers
    | PeerList
    | BadPeer
    | Noted
    | Nudge
    | InstallReport
    | Refused
)


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """One control datagram: who, which request, what."""

    request_id: int
    device_id: bytes
    body: ControlBody
    authenticated: bool = True
    counter: int = 0
    """Grows with every datagram from one sender to one peer (replay protection)."""


# -- field helpers -----------------------------------------------------------------------


def _pull_str(buf: Buffer, wide: bool = False) -> str:
    length = buf.pull_uint16() if wide else buf.pull_uint8()
    if length > MAX_MESSAGE_LENGTH:
        raise MalformedDatagram(f"string of {length} bytes is too long")
    try:
        return buf.pull_bytes(length).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedDatagram("string is not UTF-8") from None


def _push_str(buf: Buffer, text: str, wide: bool = False) -> None:
    encoded = text.encode("utf-8")[: MAX_MESSAGE_LENGTH if wide else 255]
    if wide:
        buf.push_uint16(len(encoded))
    else:
        buf.push_uint8(len(encoded))
    buf.push_bytes(encoded)


def _pull_address(buf: Buffer) -> tuple[str, int]:
    ip = str(ipaddress.IPv4Address(buf.pull_bytes(4)))
    return ip, buf.pull_uint16()


def _push_address(buf: Buffer, address: tuple[str, int]) -> None:
    try:
        buf.push_bytes(ipaddress.IPv4Address(address[0]).packed)
    except ValueError:
        raise MalformedDatagram(f"not an IPv4 address: {address[0]!r}") from None
    buf.push_uint16(address[1])


# -- one pull/push pair per body ---------------------------------------------------------


def _pull_hello(buf: Buffer) -> Hello:
    padding = buf.remaining
    buf.pull_bytes(padding)
    return Hello(padding)


def _push_hello(buf: Buffer, body: Hello) -> None:
    buf.push_bytes(bytes(body.padding))


def _pull_certificate(buf: Buffer) -> Certificate:
    length = buf.pull_uint16()
    if length > MAX_CERTIFICATE:
        raise MalformedDatagram(f"certificate of {length} bytes is too long")
    return Certificate(buf.pull_bytes(length), buf.pull_bytes(ADDRESS_TOKEN_SIZE))


def _push_certificate(buf: Buffer, body: Certificate) -> None:
    if len(body.certificate) > MAX_CERTIFICATE:
        raise ValueError(f"a certificate has at most {MAX_CERTIFICATE} bytes")
    buf.push_uint16(len(body.certificate))
    buf.push_bytes(body.certificate)
    _push_token(buf, body.address_token)


def _push_token(buf: Buffer, token: bytes) -> None:
    if len(token) != ADDRESS_TOKEN_SIZE:
        raise ValueError(f"an address token has {ADDRESS_TOKEN_SIZE} bytes")
    buf.push_bytes(token)


def _pull_register(buf: Buffer) -> Register:
    public_key = buf.pull_bytes(PUBLIC_KEY_SIZE)
    version, hostname = _pull_str(buf), _pull_str(buf)
    prefix = buf.pull_uint8()
    if prefix > 32:
        raise MalformedDatagram(f"subnet prefix /{prefix} is not IPv4")
    return Register(public_key, version, hostname, prefix, buf.pull_bytes(ADDRESS_TOKEN_SIZE))


def _push_register(buf: Buffer, body: Register) -> None:
    if len(body.public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"a device public key has {PUBLIC_KEY_SIZE} bytes")
    buf.push_bytes(body.public_key)
    _push_str(buf, body.version)
    _push_str(buf, body.hostname)
    buf.push_uint8(body.subnet_prefix)
    _push_token(buf, body.address_token)


def _pull_registered(buf: Buffer) -> Registered:
    version, office = _pull_str(buf), _pull_str(buf)
    office_type = pull_enum(buf, OfficeType)
    checkin, discovery, data, background = (buf.pull_uint16() for _ in range(4))
    licence_state, seats_over = pull_enum(buf, LicenceState), buf.pull_uint32()
    alt = (buf.pull_uint16(), buf.pull_uint16(), buf.pull_uint16(), buf.pull_uint16())
    return Registered(
        version,
        office,
        office_type,
        checkin,
        discovery,
        data,
        background,
        licence_state,
        seats_over,
        alt,
        buf.pull_uint32(),
        buf.pull_uint32(),
        buf.pull_uint16(),
    )


def _push_registered(buf: Buffer, body: Registered) -> None:
    _push_str(buf, body.version)
    _push_str(buf, body.office)
    buf.push_uint8(body.office_type)
    for port in (body.checkin_seconds, body.discovery_port, body.data_port, body.background_port):
        buf.push_uint16(port)
    buf.push_uint8(body.licence_state)
    buf.push_uint32(body.seats_over)
    for port in body.alternative_ports:
        buf.push_uint16(port)
    buf.push_uint32(body.foreground_kbps)
    buf.push_uint32(body.background_kbps)
    buf.push_uint16(body.max_downloads)


def _pull_checkin(buf: Buffer) -> CheckIn:
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


def _push_checkin(buf: Buffer, body: CheckIn) -> None:
    if len(body.content) > MAX_CHECKIN_ENTRIES:
        raise ValueError(f"at most {MAX_CHECKIN_ENTRIES} entries per check-in")
    buf.push_uint8(len(body.content))
    for entry in body.content:
        buf.push_bytes(entry.content_id.digest)
        buf.push_uint32(entry.chunks_done)
        buf.push_uint32(entry.chunk_count)
        buf.push_uint64(entry.bytes_from_peers)
        buf.push_uint64(entry.bytes_from_server)


def _pull_checkin_reply(buf: Buffer) -> CheckInReply:
    digest, length = buf.pull_bytes(32), buf.pull_uint32()
    count = buf.pull_uint8()
    if count > MAX_BANNED:
        raise MalformedDatagram(f"{count} banned peers (at most {MAX_BANNED})")
    banned = tuple(str(ipaddress.IPv4Address(buf.pull_bytes(4))) for _ in range(count))
    return CheckInReply(digest, length, banned)


def _push_checkin_reply(buf: Buffer, body: CheckInReply) -> None:
    _push_nudge(buf, body)
    banned = body.banned[:MAX_BANNED]
    buf.push_uint8(len(banned))
    for ip in banned:
        try:
            buf.push_bytes(ipaddress.IPv4Address(ip).packed)
        except ValueError:
            raise MalformedDatagram(f"not an IPv4 address: {ip!r}") from None


def _pull_nudge(buf: Buffer) -> Nudge:
    return Nudge(buf.pull_bytes(32), buf.pull_uint32())


def _push_nudge(buf: Buffer, body: CheckInReply | Nudge) -> None:
    buf.push_bytes(body.assignments_sha256)
    buf.push_uint32(body.assignments_length)


def _pull_manifest_reply(buf: Buffer) -> ManifestReply:
    return ManifestReply(pull_content_id(buf), buf.pull_bytes(32), buf.pull_uint32())


def _push_manifest_reply(buf: Buffer, body: ManifestReply) -> None:
    buf.push_bytes(body.content_id.digest)
    buf.push_bytes(body.manifest_sha256)
    buf.push_uint32(body.manifest_length)


def _pull_lease_reply(buf: Buffer) -> LeaseReply:
    content_id = pull_content_id(buf)
    decision = pull_enum(buf, LeaseDecision)
    holder = _pull_address(buf)
    valid_ms = buf.pull_uint32()
    stripes = buf.pull_uint8()
    if not 1 <= stripes <= MAX_STRIPES:
        raise MalformedDatagram(f"{stripes} stripes (1 to {MAX_STRIPES})")
    stripe_mask = buf.pull_uint64()
    if stripe_mask >> stripes:
        raise MalformedDatagram(f"stripe mask {stripe_mask:#x} beyond {stripes} stripes")
    return LeaseReply(content_id, decision, holder, valid_ms, stripes, stripe_mask)


def _push_lease_reply(buf: Buffer, body: LeaseReply) -> None:
    buf.push_bytes(body.content_id.digest)
    buf.push_uint8(body.decision)
    _push_address(buf, body.holder)
    buf.push_uint32(body.valid_ms)
    buf.push_uint8(body.stripes)
    buf.push_uint64(body.stripe_mask)


def _pull_peer_list(buf: Buffer) -> PeerList:
    content_id = pull_content_id(buf)
    count = buf.pull_uint8()
    if count > MAX_PEERS:
        raise MalformedDatagram(f"{count} peers (at most {MAX_PEERS})")
    return PeerList(content_id, tuple(_pull_address(buf) for _ in range(count)))


def _push_peer_list(buf: Buffer, body: PeerList) -> None:
    buf.push_bytes(body.content_id.digest)
    peers = body.peers[:MAX_PEERS]
    buf.push_uint8(len(peers))
    for peer in peers:
        _push_address(buf, peer)


def _pull_bad_peer(buf: Buffer) -> BadPeer:
    return BadPeer(pull_content_id(buf), _pull_address(buf), buf.pull_uint32())


def _push_bad_peer(buf: Buffer, body: BadPeer) -> None:
    buf.push_bytes(body.content_id.digest)
    _push_address(buf, body.peer)
    buf.push_uint32(body.chunk_index)


def _pull_install_report(buf: Buffer) -> InstallReport:
    content_id = pull_content_id(buf)
    status = pull_enum(buf, InstallStatus)
    attempts, exit_known = buf.pull_uint8(), buf.pull_uint8()
    if attempts > MAX_INSTALL_ATTEMPTS:
        raise MalformedDatagram(f"{attempts} install attempts (at most {MAX_INSTALL_ATTEMPTS})")
    if exit_known > 1:
        raise MalformedDatagram(f"exit_known is {exit_known}, not 0 or 1")
    (exit_code,) = struct.unpack(">q", buf.pull_bytes(8))
    tail = _pull_str(buf, wide=True)
    return InstallReport(content_id, status, attempts, exit_code if exit_known else None, tail)


def _push_install_report(buf: Buffer, body: InstallReport) -> None:
    if not 0 <= body.attempts <= MAX_INSTALL_ATTEMPTS:
        raise ValueError(f"attempts: 0 to {MAX_INSTALL_ATTEMPTS}")
    buf.push_bytes(body.content_id.digest)
    buf.push_uint8(body.status)
    buf.push_uint8(body.attempts)
    buf.push_uint8(0 if body.exit_code is None else 1)
    buf.push_bytes(struct.pack(">q", body.exit_code or 0))
    # The tail: its last bytes (what an administrator reads first), whole characters.
    encoded = body.output_tail.encode("utf-8")[-MAX_OUTPUT_TAIL:]
    _push_str(buf, encoded.decode("utf-8", "ignore"), wide=True)


def _pull_refused(buf: Buffer) -> Refused:
    return Refused(pull_enum(buf, RefusalCause), _pull_str(buf, wide=True))


def _push_refused(buf: Buffer, body: Refused) -> None:
    buf.push_uint8(body.cause)
    _push_str(buf, body.message, wide=True)


def _content_id_body(kind: type[ManifestInfo | Lease]) -> Callable[[Buffer], ControlBody]:
    return lambda buf: kind(pull_content_id(buf))


def _push_content_id_body(buf: Buffer, body: ManifestInfo | Lease) -> None:
    buf.push_bytes(body.content_id.digest)


def _pull_peers(buf: Buffer) -> Peers:
    content_id = pull_content_id(buf)
    padding = buf.remaining
    buf.pull_bytes(padding)
    return Peers(content_id, padding)


def _push_peers(buf: Buffer, body: Peers) -> None:
    buf.push_bytes(body.content_id.digest)
    buf.push_bytes(bytes(body.padding))


_PULLERS: dict[ControlType, Callable[[Buffer], ControlBody]] = {
    ControlType.HELLO: _pull_hello,
    ControlType.CERTIFICATE: _pull_certificate,
    ControlType.REGISTER: _pull_register,
    ControlType.REGISTERED: _pull_registered,
    ControlType.CHECKIN: _pull_checkin,
    ControlType.CHECKIN_REPLY: _pull_checkin_reply,
    ControlType.MANIFEST_INFO: _content_id_body(ManifestInfo),
    ControlType.MANIFEST_REPLY: _pull_manifest_reply,
    ControlType.LEASE: _content_id_body(Lease),
    ControlType.LEASE_REPLY: _pull_lease_reply,
    ControlType.PEERS: _pull_peers,
    ControlType.PEER_LIST: _pull_peer_list,
    ControlType.BAD_PEER: _pull_bad_peer,
    ControlType.NOTED: lambda buf: Noted(),
    ControlType.NUDGE: _pull_nudge,
    ControlType.INSTALL_REPORT: _pull_install_report,
    ControlType.REFUSED: _pull_refused,
}

_PUSHERS: dict[type, tuple[ControlType, Callable[[Buffer, ControlBody], None]]] = {
    Hello: (ControlType.HELLO, _push_hello),  # type: ignore[dict-item]
    Certificate: (ControlType.CERTIFICATE, _push_certificate),  # type: ignore[dict-item]
    Register: (ControlType.REGISTER, _push_register),  # type: ignore[dict-item]
    Registered: (ControlType.REGISTERED, _push_registered),  # type: ignore[dict-item]
    CheckIn: (ControlType.CHECKIN, _push_checkin),  # type: ignore[dict-item]
    CheckInReply: (ControlType.CHECKIN_REPLY, _push_checkin_reply),  # type: ignore[dict-item]
    ManifestInfo: (ControlType.MANIFEST_INFO, _push_content_id_body),  # type: ignore[dict-item]
    ManifestReply: (ControlType.MANIFEST_REPLY, _push_manifest_reply),  # type: ignore[dict-item]
    Lease: (ControlType.LEASE, _push_content_id_body),  # type: ignore[dict-item]
    LeaseReply: (ControlType.LEASE_REPLY, _push_lease_reply),  # type: ignore[dict-item]
    Peers: (ControlType.PEERS, _push_peers),  # type: ignore[dict-item]
    PeerList: (ControlType.PEER_LIST, _push_peer_list),  # type: ignore[dict-item]
    BadPeer: (ControlType.BAD_PEER, _push_bad_peer),  # type: ignore[dict-item]
    Noted: (ControlType.NOTED, lambda buf, body: None),
    Nudge: (ControlType.NUDGE, _push_nudge),  # type: ignore[dict-item]
    InstallReport: (ControlType.INSTALL_REPORT, _push_install_report),  # type: ignore[dict-item]
    Refused: (ControlType.REFUSED, _push_refused),  # type: ignore[dict-item]
}


UNAUTHENTICATED = frozenset({ControlType.HELLO, ControlType.CERTIFICATE})
"""Types that never carry a tag: the certificate is signed by the console instead."""


def _tag(key: bytes, signed_part: bytes | memoryview) -> bytes:
    return hmac.new(key, signed_part, hashlib.sha256).digest()[:TAG_SIZE]


def encode_control(
    message: ControlMessage, key: bytes | None, version: int = PROTOCOL_VERSION
) -> bytes:
    """Encode one control datagram and authenticate it with ``key`` (the device's control
    key); ``key=None`` sends it without a tag (``HELLO``, ``CERTIFICATE``, and the
    unauthenticated ``REFUSED``)."""
    if len(message.device_id) != DEVICE_ID_SIZE:
        raise ValueError(f"device ID must be {DEVICE_ID_SIZE} bytes")
    message_type, push = _PUSHERS[type(message.body)]
    buf = Buffer()
    buf.push_bytes(
        _HEADER.pack(
            MAGIC,
            version,
            message_type,
            message.request_id,
            message.device_id,
            message.counter,
        )
    )
    push(buf, message.body)
    signed_part = buf.data()
    return signed_part + (_NO_TAG if key is None else _tag(key, signed_part))


def is_control_datagram(data: bytes | bytearray | memoryview) -> bool:
    """True when the type byte is in the control range (0x20..0x3F)."""
    return len(data) >= 4 and 0x20 <= data[3] <= 0x3F


def pull_control(data: bytes | bytearray | memoryview) -> ControlMessage:
    """Decode a control datagram *without* checking its tag (``authenticated=False``).

    The server reads the device ID (and a REGISTER's public key) this way to find the
    key, then checks the tag with ``tag_matches``. Raises ``MalformedDatagram`` (or
    ``WrongMagic``, ``UnsupportedProtocolVersion``) and nothing else.
    """
    if len(data) < _HEADER.size + TAG_SIZE:
        if len(data) >= 2 and bytes(data[:2]) != MAGIC:
            raise WrongMagic("not a shoal datagram (wrong magic)")
        raise MalformedDatagram(f"control datagram of {len(data)} bytes is truncated")
    magic, version, code, request_id, device_id, counter = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WrongMagic("not a shoal datagram (wrong magic)")
    if not MIN_PROTOCOL_VERSION <= version <= MAX_PROTOCOL_VERSION:
        raise UnsupportedProtocolVersion(version)
    try:
        message_type = ControlType(code)
    except ValueError:
        raise MalformedDatagram(f"unknown control message type 0x{code:02x}") from None
    buf = Buffer(memoryview(data)[:-TAG_SIZE])
    buf.pull_bytes(_HEADER.size)
    body = _PULLERS[message_type](buf)
    if not buf.eof():
        raise MalformedDatagram(
            f"{message_type.name} datagram has {buf.remaining} unexpected trailing bytes"
        )
    return ControlMessage(request_id, device_id, body, False, counter)


def tag_matches(data: bytes | bytearray | memoryview, key: bytes) -> bool:
    """Does the datagram's tag verify with ``key`` (constant-time comparison)?"""
    view = memoryview(data)
    return hmac.compare_digest(_tag(key, view[:-TAG_SIZE]), bytes(view[-TAG_SIZE:]))


def decode_control(data: bytes | bytearray | memoryview, key: bytes) -> ControlMessage:
    """Decode and authenticate a control datagram with ``key``.

    Raises ``MalformedDatagram`` (or a subclass: ``WrongMagic``,
    ``UnsupportedProtocolVersion``, ``AuthenticationFailed``) and nothing else.
    ``HELLO``/``CERTIFICATE`` (which carry no tag) and a ``REFUSED`` whose tag does not
    verify are returned with ``authenticated=False``: the caller decides what such a
    message may do (a certificate is checked against the console key; a refusal only
    informs).
    """
    message = pull_control(data)
    message_type = _PUSHERS[type(message.body)][0]
    if message_type in UNAUTHENTICATED:
        return message
    if tag_matches(data, key):
        return replace(message, authenticated=True)
    if message_type is ControlType.REFUSED:
        return message
    raise AuthenticationFailed(
        f"{message_type.name} not authenticated by this device's control key (tag mismatch)"
    )
