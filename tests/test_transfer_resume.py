"""A chunk resumed from the prefix an earlier request received (issues 9 and 10): the
request carries an offset, the sender sends the rest only, and nothing an offset asks
makes a sender do more than a whole request would."""

from __future__ import annotations

import hashlib
import random

import pytest

from shoal.core.ids import ContentId
from shoal.protocol.serving import read_servable
from shoal.protocol.transfer import ChunkRequested, Mode
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
    upload = next(iter(sender.engine._sender.uploads.values()))
    assert upload.segment_count == 45


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
