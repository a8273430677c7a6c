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

The bodies live by family, each with its codec: ``control_registration`` (HELLO,
CERTIFICATE, REGISTER, REGISTERED), ``control_checkin`` (CHECKIN, its reply, NUDGE,
INSTALL_REPORT), ``control_content`` (MANIFEST_*, LEASE*, PEERS, PEER_LIST, BAD_PEER);
their sizes, enumerations and field codecs are in ``control_fields``. This module holds
the frame (header, tag), NOTED, REFUSED and the type tables, and re-exports every name.

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
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from shoal.wire.buffer import Buffer
from shoal.wire.control_checkin import (
    CheckIn,
    CheckInReply,
    ContentProgress,
    InstallReport,
    Nudge,
    pull_checkin,
    pull_checkin_reply,
    pull_install_report,
    pull_nudge,
    push_checkin,
    push_checkin_reply,
    push_install_report,
    push_nudge,
)
from shoal.wire.control_content import (
    BadPeer,
    Lease,
    LeaseReply,
    ManifestInfo,
    ManifestReply,
    PeerList,
    Peers,
    content_id_body,
    pull_bad_peer,
    pull_lease_reply,
    pull_manifest_reply,
    pull_peer_list,
    pull_peers,
    push_bad_peer,
    push_lease_reply,
    push_manifest_reply,
    push_peer_list,
    push_peers,
    pushcontent_id_body,
)
from shoal.wire.control_fields import (
    ADDRESS_TOKEN_SIZE,
    DEVICE_ID_SIZE,
    HEADER,
    HEADER_SIZE,
    HELLO_SIZE,
    MAX_BANNED,
    MAX_CERTIFICATE,
    MAX_CHECKIN_ENTRIES,
    MAX_INSTALL_ATTEMPTS,
    MAX_MESSAGE_LENGTH,
    MAX_OUTPUT_TAIL,
    MAX_PEERS,
    PUBLIC_KEY_SIZE,
    TAG_SIZE,
    InstallStatus,
    LeaseDecision,
    LicenceState,
    OfficeType,
    RefusalCause,
    pull_str,
    push_str,
)
from shoal.wire.control_registration import (
    Certificate,
    Hello,
    Register,
    Registered,
    pull_certificate,
    pull_hello,
    pull_register,
    pull_registered,
    push_certificate,
    push_hello,
    push_register,
    push_registered,
)
from shoal.wire.datagram import MAX_CONTROL_VERSION, MIN_CONTROL_VERSION
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic
from shoal.wire.messages import MAGIC, PROTOCOL_VERSION, pull_enum

__all__ = [
    "ADDRESS_TOKEN_SIZE",
    "DEVICE_ID_SIZE",
    "HEADER_SIZE",
    "HELLO_SIZE",
    "MAX_BANNED",
    "MAX_CERTIFICATE",
    "MAX_CHECKIN_ENTRIES",
    "MAX_INSTALL_ATTEMPTS",
    "MAX_MESSAGE_LENGTH",
    "MAX_OUTPUT_TAIL",
    "MAX_PEERS",
    "PUBLIC_KEY_SIZE",
    "TAG_SIZE",
    "UNAUTHENTICATED",
    "AuthenticationFailed",
    "BadPeer",
    "Certificate",
    "CheckIn",
    "CheckInReply",
    "ContentProgress",
    "ControlBody",
    "ControlMessage",
    "ControlType",
    "Hello",
    "InstallReport",
    "InstallStatus",
    "Lease",
    "LeaseDecision",
    "LeaseReply",
    "LicenceState",
    "ManifestInfo",
    "ManifestReply",
    "Noted",
    "Nudge",
    "OfficeType",
    "PeerList",
    "Peers",
    "RefusalCause",
    "Refused",
    "Register",
    "Registered",
    "decode_control",
    "encode_control",
    "is_control_datagram",
    "pull_control",
    "tag_matches",
]

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


@dataclass(frozen=True, slots=True)
class Noted:
    pass


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


def pull_refused(buf: Buffer) -> Refused:
    return Refused(pull_enum(buf, RefusalCause), pull_str(buf, wide=True))


def push_refused(buf: Buffer, body: Refused) -> None:
    buf.push_uint8(body.cause)
    push_str(buf, body.message, wide=True)


_PULLERS: dict[ControlType, Callable[[Buffer], ControlBody]] = {
    ControlType.HELLO: pull_hello,
    ControlType.CERTIFICATE: pull_certificate,
    ControlType.REGISTER: pull_register,
    ControlType.REGISTERED: pull_registered,
    ControlType.CHECKIN: pull_checkin,
    ControlType.CHECKIN_REPLY: pull_checkin_reply,
    ControlType.MANIFEST_INFO: content_id_body(ManifestInfo),
    ControlType.MANIFEST_REPLY: pull_manifest_reply,
    ControlType.LEASE: content_id_body(Lease),
    ControlType.LEASE_REPLY: pull_lease_reply,
    ControlType.PEERS: pull_peers,
    ControlType.PEER_LIST: pull_peer_list,
    ControlType.BAD_PEER: pull_bad_peer,
    ControlType.NOTED: lambda buf: Noted(),
    ControlType.NUDGE: pull_nudge,
    ControlType.INSTALL_REPORT: pull_install_report,
    ControlType.REFUSED: pull_refused,
}

_PUSHERS: dict[type, tuple[ControlType, Callable[[Buffer, ControlBody], None]]] = {
    Hello: (ControlType.HELLO, push_hello),  # type: ignore[dict-item]
    Certificate: (ControlType.CERTIFICATE, push_certificate),  # type: ignore[dict-item]
    Register: (ControlType.REGISTER, push_register),  # type: ignore[dict-item]
    Registered: (ControlType.REGISTERED, push_registered),  # type: ignore[dict-item]
    CheckIn: (ControlType.CHECKIN, push_checkin),  # type: ignore[dict-item]
    CheckInReply: (ControlType.CHECKIN_REPLY, push_checkin_reply),  # type: ignore[dict-item]
    ManifestInfo: (ControlType.MANIFEST_INFO, pushcontent_id_body),  # type: ignore[dict-item]
    ManifestReply: (ControlType.MANIFEST_REPLY, push_manifest_reply),  # type: ignore[dict-item]
    Lease: (ControlType.LEASE, pushcontent_id_body),  # type: ignore[dict-item]
    LeaseReply: (ControlType.LEASE_REPLY, push_lease_reply),  # type: ignore[dict-item]
    Peers: (ControlType.PEERS, push_peers),  # type: ignore[dict-item]
    PeerList: (ControlType.PEER_LIST, push_peer_list),  # type: ignore[dict-item]
    BadPeer: (ControlType.BAD_PEER, push_bad_peer),  # type: ignore[dict-item]
    Noted: (ControlType.NOTED, lambda buf, body: None),
    Nudge: (ControlType.NUDGE, push_nudge),  # type: ignore[dict-item]
    InstallReport: (ControlType.INSTALL_REPORT, push_install_report),  # type: ignore[dict-item]
    Refused: (ControlType.REFUSED, push_refused),  # type: ignore[dict-item]
}


UNAUTHENTICATED = frozenset({ControlType.HELLO, ControlType.CERTIFICATE})
"""Types that never carry a tag: the certificate is signed by the console instead."""


_BLOCK = 64  # SHA-256's block size, in bytes (RFC 2104 §2: B)
_IPAD = bytes(byte ^ 0x36 for byte in range(256))
_OPAD = bytes(byte ^ 0x5C for byte in range(256))
MAX_PREPARED_KEYS = 100_000
"""Keys whose HMAC pads are kept hashed (every registered device's, on a server); past
it the table starts again empty."""
_prepared: dict[bytes, tuple[Any, Any]] = {}


def _tag(key: bytes, signed_part: bytes | memoryview) -> bytes:
    """HMAC-SHA256 (RFC 2104), truncated to ``TAG_SIZE``.

    The key's inner and outer pads are hashed once per key and copied per datagram:
    2 us instead of 5 us for ``hmac.new`` or ``hmac.digest`` (whose OpenSSL set-up
    dominates for a datagram of 100 bytes), and a server tags or checks every control
    datagram (issue 10)."""
    pads = _prepared.get(key)
    if pads is None:
        if len(key) > _BLOCK:
            return hmac.digest(key, signed_part, "sha256")[:TAG_SIZE]
        padded = key.ljust(_BLOCK, b"\0")
        pads = (hashlib.sha256(padded.translate(_IPAD)), hashlib.sha256(padded.translate(_OPAD)))
        if len(_prepared) >= MAX_PREPARED_KEYS:
            _prepared.clear()
        _prepared[key] = pads
    inner = pads[0].copy()
    inner.update(signed_part)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.digest()[:TAG_SIZE]


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
        HEADER.pack(
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
    if len(data) < HEADER.size + TAG_SIZE:
        if len(data) >= 2 and bytes(data[:2]) != MAGIC:
            raise WrongMagic("not a shoal datagram (wrong magic)")
        raise MalformedDatagram(f"control datagram of {len(data)} bytes is truncated")
    magic, version, code, request_id, device_id, counter = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WrongMagic("not a shoal datagram (wrong magic)")
    if not MIN_CONTROL_VERSION <= version <= MAX_CONTROL_VERSION:  # no version 3 here
        raise UnsupportedProtocolVersion(version)
    try:
        message_type = ControlType(code)
    except ValueError:
        raise MalformedDatagram(f"unknown control message type 0x{code:02x}") from None
    buf = Buffer(memoryview(data)[:-TAG_SIZE])
    buf.pull_bytes(HEADER.size)
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
