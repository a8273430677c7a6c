"""Control messages about one content (``shoal.wire.control``): its manifest
(MANIFEST_INFO/REPLY), the office's WAN lease (LEASE/REPLY), its peers (PEERS,
PEER_LIST) and a peer that served a bad chunk (BAD_PEER), with their codecs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shoal.core.address import Address
from shoal.core.ids import ContentId
from shoal.core.stripes import MAX_STRIPES
from shoal.wire.buffer import Buffer
from shoal.wire.control_fields import MAX_PEERS, LeaseDecision, pull_address, push_address
from shoal.wire.errors import MalformedDatagram
from shoal.wire.messages import pull_content_id, pull_enum


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
    holder: Address
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
    peers: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class BadPeer:
    content_id: ContentId
    peer: Address
    chunk_index: int


def pull_manifest_reply(buf: Buffer) -> ManifestReply:
    return ManifestReply(pull_content_id(buf), buf.pull_bytes(32), buf.pull_uint32())


def push_manifest_reply(buf: Buffer, body: ManifestReply) -> None:
    buf.push_bytes(body.content_id.digest)
    buf.push_bytes(body.manifest_sha256)
    buf.push_uint32(body.manifest_length)


def pull_lease_reply(buf: Buffer) -> LeaseReply:
    content_id = pull_content_id(buf)
    decision = pull_enum(buf, LeaseDecision)
    holder = pull_address(buf)
    valid_ms = buf.pull_uint32()
    stripes = buf.pull_uint8()
    if not 1 <= stripes <= MAX_STRIPES:
        raise MalformedDatagram(f"{stripes} stripes (1 to {MAX_STRIPES})")
    stripe_mask = buf.pull_uint64()
    if stripe_mask >> stripes:
        raise MalformedDatagram(f"stripe mask {stripe_mask:#x} beyond {stripes} stripes")
    return LeaseReply(content_id, decision, holder, valid_ms, stripes, stripe_mask)


def push_lease_reply(buf: Buffer, body: LeaseReply) -> None:
    buf.push_bytes(body.content_id.digest)
    buf.push_uint8(body.decision)
    push_address(buf, body.holder)
    buf.push_uint32(body.valid_ms)
    buf.push_uint8(body.stripes)
    buf.push_uint64(body.stripe_mask)


def pull_peer_list(buf: Buffer) -> PeerList:
    content_id = pull_content_id(buf)
    count = buf.pull_uint8()
    if count > MAX_PEERS:
        raise MalformedDatagram(f"{count} peers (at most {MAX_PEERS})")
    return PeerList(content_id, tuple(pull_address(buf) for _ in range(count)))


def push_peer_list(buf: Buffer, body: PeerList) -> None:
    buf.push_bytes(body.content_id.digest)
    peers = body.peers[:MAX_PEERS]
    buf.push_uint8(len(peers))
    for peer in peers:
        push_address(buf, peer)


def pull_bad_peer(buf: Buffer) -> BadPeer:
    return BadPeer(pull_content_id(buf), pull_address(buf), buf.pull_uint32())


def push_bad_peer(buf: Buffer, body: BadPeer) -> None:
    buf.push_bytes(body.content_id.digest)
    push_address(buf, body.peer)
    buf.push_uint32(body.chunk_index)


def content_id_body(kind: type[ManifestInfo | Lease]) -> Callable[[Buffer], ManifestInfo | Lease]:
    return lambda buf: kind(pull_content_id(buf))


def pushcontent_id_body(buf: Buffer, body: ManifestInfo | Lease) -> None:
    buf.push_bytes(body.content_id.digest)


def pull_peers(buf: Buffer) -> Peers:
    content_id = pull_content_id(buf)
    padding = buf.remaining
    buf.pull_bytes(padding)
    return Peers(content_id, padding)


def push_peers(buf: Buffer, body: Peers) -> None:
    buf.push_bytes(body.content_id.digest)
    buf.push_bytes(bytes(body.padding))
