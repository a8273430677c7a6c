"""Repeated discovery datagrams decoded and encoded once (``shoal.wire.repeats``)."""

from __future__ import annotations

import pytest

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.wire import repeats
from shoal.wire.errors import MalformedDatagram
from shoal.wire.messages import NO_TOKEN, Have, WhoHas, decode_datagram, encode_datagram
from shoal.wire.repeats import MAX_REMEMBERED, decode_remembered, encode_have

CONTENT_ID = ContentId(bytes(range(32)))


def test_a_repeated_datagram_decodes_to_the_same_message_as_a_fresh_decoding() -> None:
    chunks = ChunkSet(20, [0, 3, 19])
    datagram = encode_datagram(Have(0, CONTENT_ID, chunks, NO_TOKEN))
    first = decode_remembered(datagram)
    again = decode_remembered(bytes(datagram))  # equal bytes, another object
    assert first == again == decode_datagram(datagram)
    assert isinstance(again, Have) and sorted(again.chunks) == [0, 3, 19]


def test_a_malformed_datagram_raises_every_time_it_comes() -> None:
    good = encode_datagram(WhoHas(5, CONTENT_ID, NO_TOKEN, 4))
    padded_with_ones = good[:-1] + b"\x01"  # padding must be zeros
    for _ in range(3):
        with pytest.raises(MalformedDatagram):
            decode_remembered(padded_with_ones)


def test_a_flood_of_distinct_datagrams_keeps_a_bounded_memory() -> None:
    for query_id in range(3 * MAX_REMEMBERED):
        query = encode_datagram(WhoHas(query_id, CONTENT_ID, NO_TOKEN, 0))
        assert decode_remembered(query) == WhoHas(query_id, CONTENT_ID, NO_TOKEN, 0)
    assert len(repeats._remembered) <= MAX_REMEMBERED


def test_a_receive_buffer_is_decoded_but_never_remembered() -> None:
    buffer = bytearray(encode_datagram(WhoHas(9, CONTENT_ID, NO_TOKEN, 0)))
    assert decode_remembered(memoryview(buffer)) == WhoHas(9, CONTENT_ID, NO_TOKEN, 0)
    buffer[:] = encode_datagram(WhoHas(10, CONTENT_ID, NO_TOKEN, 0))  # the next read
    assert decode_remembered(memoryview(buffer)) == WhoHas(10, CONTENT_ID, NO_TOKEN, 0)


def test_a_have_is_encoded_as_the_codec_does_after_its_holding_changed() -> None:
    chunks = ChunkSet(12, [1])
    token = bytes(range(1, 9))
    assert encode_have(0, CONTENT_ID, chunks, NO_TOKEN) == encode_datagram(
        Have(0, CONTENT_ID, chunks, NO_TOKEN)
    )
    chunks.add(7)  # the same set object, one chunk more: a new HAVE
    for query_id, token_sent in ((0, NO_TOKEN), (0, token), (3, NO_TOKEN)):
        assert encode_have(query_id, CONTENT_ID, chunks, token_sent) == encode_datagram(
            Have(query_id, CONTENT_ID, chunks, token_sent)
        )
