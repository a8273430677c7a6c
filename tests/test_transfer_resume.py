"""A chunk resumed from the prefix an earlier request received (issues 9 and 10): the
request carries an offset, the sender sends the rest only, and nothing an offset asks
makes a sender do more than a whole request would."""

from __future__ import annotations

import hashlib
import random

import pytest

from shoal.core.ids import ContentId
from shoal.protocol.serving import read_servable
from shoal.protocol.transfer import (
    Address,
    ChunkCorrupted,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    Mode,
    TransferEngine,
    TransferTimedOut,
    VersionRejected,
)
from shoal.wire import (
    ChunkRequest,
    Data,
    Refusal,
    RefusalReason,
    decode_datagram,
    encode_datagram,
)
from transfer_link import Network

CONTENT_ID = ContentId(hashlib.sha256(b"package").digest())
SEGMENT = 1380
CHUNK = random.Random(9).randbytes(200_000)  # 145 segments, the last one short


def _request(token: bytes, offset: int, chunk_length: int = len(CHUNK)) -> ChunkRequest:
    return ChunkRequest(
        request_id=7,
        content_id=CONTENT_ID,
        chunk_index=0,
        chunk_length=chunk_length,
        mode=Mode.FOREGROUND,
        segment_size=SEGMENT,
        receive_window=64,
        token=token,
        offset=offset,
    )


def test_a_request_with_an_offset_is_served_the_rest_of_the_chunk_only() -> None:
    network = Network()
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    sender.serve(CONTENT_ID, 0, CHUNK)
    token = sender.engine.address_token(receiver.address, network.now)
    network.inject(encode_datagram(_request(token, 100 * SEGMENT)), receiver.address, sender)
    [requested] = sender.events_of(ChunkRequested)
    assert (requested.chunk_length, requested.offset) == (len(CHUNK), 100 * SEGMENT)
    sent = [decode_datagram(d) for d, _ in sender.engine.datagrams_to_send(network.now)]
    data = [message for message in sent if isinstance(message, Data)]
    # Segment 0 of the transfer is the chunk's segment 100; 45 segments in all.
    assert data[0].segment_index == 0
    assert data[0].payload == CHUNK[100 * SEGMENT : 101 * SEGMENT]
    assert all(message.segment_index < 45 for message in data)


@pytest.mark.parametrize(
    "offset", [len(CHUNK), len(CHUNK) + SEGMENT, 2**32 - 1, SEGMENT + 1, SEGMENT // 2]
)
def test_an_offset_outside_the_chunk_or_between_segments_is_refused_before_a_read(
    offset: int,
) -> None:
    network = Network()
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    sender.serve(CONTENT_ID, 0, CHUNK)
    token = sender.engine.address_token(receiver.address, network.now)
    sender.engine.receive_datagram(
        encode_datagram(_request(token, offset)), receiver.address, network.now
    )
    answers = [decode_datagram(d) for d, _ in sender.engine.datagrams_to_send(network.now)]
    assert answers == [Refusal(7, RefusalReason.INVALID_REQUEST)]
    assert sender.engine.next_event() is None  # nothing asked of the store
    assert sender.engine.counters.requests_invalid == 1


class _Store:
    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk

    def __contains__(self, content_id: object) -> bool:
        return content_id == CONTENT_ID

    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
        return self.chunk


def test_serving_slices_the_verified_chunk_and_still_checks_its_whole_length() -> None:
    store = _Store(CHUNK)
    assert (
        bytes(read_servable(store, CONTENT_ID, 0, len(CHUNK), 3 * SEGMENT))
        == (  # type: ignore[arg-type]
            CHUNK[3 * SEGMENT :]
        )
    )
    assert read_servable(store, CONTENT_ID, 0, len(CHUNK)) is CHUNK
    # A request whose length is not the chunk's is refused, offset or not.
    assert read_servable(store, CONTENT_ID, 0, len(CHUNK) - 1, SEGMENT) is (
        RefusalReason.INVALID_REQUEST
    )


def _ask(engine: TransferEngine, peer: Address, network: Network, prefix: bytes = b"") -> int:
    chunk_hash = hashlib.sha256(CHUNK).digest()
    return engine.request_chunk(
        peer, CONTENT_ID, 0, len(CHUNK), chunk_hash, Mode.FOREGROUND, network.now, prefix
    )


def test_a_resumed_chunk_asks_for_the_rest_only_and_arrives_whole() -> None:
    network = Network()
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    sender.serve(CONTENT_ID, 0, CHUNK)
    _ask(receiver.engine, sender.address, network, CHUNK[: 100 * SEGMENT + 17])  # torn tail
    network.run(lambda: bool(receiver.events_of(ChunkReceived)), timeout=30)
    assert bytes(receiver.events_of(ChunkReceived)[0].data) == CHUNK
    [requested] = sender.events_of(ChunkRequested)
    assert requested.offset == 100 * SEGMENT
    assert sender.engine.counters.payload_bytes_sent == len(CHUNK) - 100 * SEGMENT


def test_a_sender_gone_away_hands_back_the_prefix_and_another_holder_sends_the_rest() -> None:
    network = Network(rate=2_000_000)
    receiver, first, second = (network.add(f"10.0.0.{i}") for i in (1, 2, 3))
    first.serve(CONTENT_ID, 0, CHUNK)
    second.serve(CONTENT_ID, 0, CHUNK)
    _ask(receiver.engine, first.address, network)
    network.run(lambda: receiver.engine.counters.payload_bytes_received > 60_000, timeout=30)
    network.silence(first)  # its process died mid-chunk
    network.run(lambda: bool(receiver.events_of(TransferTimedOut)), timeout=30)
    [ended] = receiver.events_of(TransferTimedOut)
    # Whole segments, received in order: exactly the chunk's first bytes.
    assert len(ended.prefix) >= 60_000 - 60_000 % SEGMENT and len(ended.prefix) % SEGMENT == 0
    assert ended.prefix == CHUNK[: len(ended.prefix)]
    _ask(receiver.engine, second.address, network, ended.prefix)
    network.run(lambda: bool(receiver.events_of(ChunkReceived)), timeout=30)
    assert bytes(receiver.events_of(ChunkReceived)[0].data) == CHUNK
    assert second.engine.counters.payload_bytes_sent == len(CHUNK) - len(ended.prefix)


def test_a_cancelled_request_hands_back_what_it_held() -> None:
    network = Network(rate=2_000_000)
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    sender.serve(CONTENT_ID, 0, CHUNK)
    request_id = _ask(receiver.engine, sender.address, network, CHUNK[: 10 * SEGMENT])
    # Not answered yet: the prefix it was asked with comes back.
    assert receiver.engine.cancel(request_id, network.now) == CHUNK[: 10 * SEGMENT]
    request_id = _ask(receiver.engine, sender.address, network, CHUNK[: 10 * SEGMENT])
    network.run(lambda: receiver.engine.counters.payload_bytes_received > 30_000, timeout=30)
    prefix = receiver.engine.cancel(request_id, network.now)
    assert len(prefix) > 30_000 and prefix == CHUNK[: len(prefix)]
    assert receiver.engine.cancel(request_id, network.now) == b""  # ended: nothing held


def test_a_corrupt_prefix_fails_as_resumed_and_a_whole_request_then_succeeds() -> None:
    network = Network()
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    sender.serve(CONTENT_ID, 0, CHUNK)
    prefix = bytearray(CHUNK[: 40 * SEGMENT])
    prefix[5] ^= 0xFF  # a bit gone bad in our own memory or file
    _ask(receiver.engine, sender.address, network, bytes(prefix))
    network.run(lambda: bool(receiver.events_of(ChunkCorrupted)), timeout=30)
    assert receiver.events_of(ChunkCorrupted)[0].resumed  # the sender is not to blame
    _ask(receiver.engine, sender.address, network)
    network.run(lambda: bool(receiver.events_of(ChunkReceived)), timeout=30)
    assert bytes(receiver.events_of(ChunkReceived)[0].data) == CHUNK


def test_a_bad_whole_chunk_still_blames_its_sender() -> None:
    network = Network()
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    sender.serve(CONTENT_ID, 0, bytes(len(CHUNK)))  # not what the hash says
    _ask(receiver.engine, sender.address, network)
    network.run(lambda: bool(receiver.events_of(ChunkCorrupted)), timeout=30)
    assert not receiver.events_of(ChunkCorrupted)[0].resumed


def test_a_version_2_peer_asked_with_an_offset_is_asked_whole_and_not_dropped() -> None:
    network = Network()
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    sender.serve(CONTENT_ID, 0, CHUNK)
    sender.serve(CONTENT_ID, 1, CHUNK)
    _ask(receiver.engine, sender.address, network)  # a proven peer, as peers are
    network.run(lambda: len(receiver.events_of(ChunkReceived)) == 1, timeout=30)
    prefix = CHUNK[: 10 * SEGMENT]
    chunk_hash = hashlib.sha256(CHUNK).digest()
    receiver.engine.request_chunk(
        sender.address, CONTENT_ID, 1, len(CHUNK), chunk_hash, Mode.FOREGROUND, network.now
    )
    _ask(receiver.engine, sender.address, network, prefix)
    requests = [d for d, _ in receiver.engine.datagrams_to_send(network.now) if d[3] == 0x01]
    assert [datagram[2] for datagram in requests] == [2, 3]
    # What a peer of the previous build answers to the version-3 request.
    network.inject(b"SH\x02\x06\x02\x02", sender.address, receiver)
    [refused] = receiver.events_of(ChunkRefused)
    # Only the resumed request ended, its prefix handed back; the peer is not dropped.
    assert refused.reason is RefusalReason.UNSUPPORTED_VERSION and refused.prefix == prefix
    assert not receiver.events_of(VersionRejected)
    # Asked again with the prefix, it is asked whole (version 2); both chunks arrive.
    _ask(receiver.engine, sender.address, network, prefix)
    [again] = [datagram for datagram, _ in receiver.engine.datagrams_to_send(network.now)]
    assert again[2] == 2
    network.inject(requests[0], receiver.address, sender)
    network.inject(again, receiver.address, sender)
    network.run(lambda: len(receiver.events_of(ChunkReceived)) == 3, timeout=30)
    assert all(bytes(event.data) == CHUNK for event in receiver.events_of(ChunkReceived))


def test_a_peer_that_speaks_no_version_of_ours_is_still_rejected() -> None:
    network = Network()
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    _ask(receiver.engine, sender.address, network)
    receiver.engine.datagrams_to_send(network.now)
    network.inject(b"SH\x04\x06\x04\x05", sender.address, receiver)
    assert receiver.events_of(VersionRejected) == [VersionRejected(sender.address, 4, 5)]
    assert receiver.events_of(ChunkRefused)[0].reason is RefusalReason.UNSUPPORTED_VERSION
