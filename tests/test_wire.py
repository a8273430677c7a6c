"""Codecs of every shoal datagram: exact bytes, and nothing but MalformedDatagram on bad input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.wire import (
    DATA_HEADER_SIZE,
    MAX_ACK_RANGES,
    Ack,
    Buffer,
    Cancel,
    ChunkRequest,
    Data,
    Have,
    MalformedDatagram,
    Message,
    Mode,
    Refusal,
    RefusalReason,
    Retry,
    UnsupportedProtocolVersion,
    VersionError,
    WhoHas,
    WrongMagic,
    decode_datagram,
    encode_ack,
    encode_data,
    encode_datagram,
    pull_data_header,
)

CONTENT_ID = ContentId(bytes(range(32)))
CONTENT_ID_BYTES = bytes(range(32))
TOKEN = bytes(range(0xA0, 0xA8))

GOLDEN: list[tuple[Message, bytes]] = [
    (
        ChunkRequest(
            request_id=0x01020304,
            content_id=CONTENT_ID,
            chunk_index=7,
            chunk_length=1048576,
            mode=Mode.BACKGROUND,
            segment_size=1380,
            receive_window=2048,
            token=TOKEN,
        ),
        b"SH\x02\x01"
        + b"\x01\x02\x03\x04"
        + TOKEN
        + CONTENT_ID_BYTES
        + b"\x00\x00\x00\x07"
        + b"\x00\x10\x00\x00"
        + b"\x01"
        + b"\x05\x64"
        + b"\x00\x00\x08\x00",
    ),
    (
        # A resumed chunk's request: version 3, the offset after version 2's body.
        ChunkRequest(
            request_id=0x01020304,
            content_id=CONTENT_ID,
            chunk_index=7,
            chunk_length=1048576,
            mode=Mode.BACKGROUND,
            segment_size=1380,
            receive_window=2048,
            token=TOKEN,
            offset=100 * 1380,
        ),
        b"SH\x03\x01"
        + b"\x01\x02\x03\x04"
        + TOKEN
        + CONTENT_ID_BYTES
        + b"\x00\x00\x00\x07"
        + b"\x00\x10\x00\x00"
        + b"\x01"
        + b"\x05\x64"
        + b"\x00\x00\x08\x00"
        + b"\x00\x02\x1b\x10",
    ),
    (
        Data(
            request_id=9,
            packet_number=0x10,
            segment_index=3,
            timestamp_us=0xFFFFFFFF,
            payload=b"abc",
        ),
        b"SH\x02\x02"
        + b"\x00\x00\x00\x09"
        + b"\x00\x00\x00\x10"
        + b"\x00\x00\x00\x03"
        + b"\xff\xff\xff\xff"
        + b"abc",
    ),
    (
        Ack(
            request_id=9,
            largest_packet_number=40,
            ack_delay_us=1500,
            one_way_delay_us=123456,
            cumulative=10,
            receive_window=2048,
            ranges=((12, 15), (20, 21)),
        ),
        b"SH\x02\x03"
        + b"\x00\x00\x00\x09"
        + b"\x00\x00\x00\x28"
        + b"\x00\x00\x05\xdc"
        + b"\x00\x01\xe2\x40"
        + b"\x00\x00\x00\x0a"
        + b"\x00\x00\x08\x00"
        + b"\x02"
        + b"\x00\x00\x00\x0c\x00\x00\x00\x0f"
        + b"\x00\x00\x00\x14\x00\x00\x00\x15",
    ),
    (Refusal(request_id=5, reason=RefusalReason.BUSY), b"SH\x02\x04\x00\x00\x00\x05\x02"),
    (Cancel(request_id=0xDEADBEEF), b"SH\x02\x05\xde\xad\xbe\xef"),
    (VersionError(min_version=1, max_version=3), b"SH\x02\x06\x01\x03"),
    (Retry(request_id=5, token=TOKEN), b"SH\x02\x07\x00\x00\x00\x05" + TOKEN),
    (
        WhoHas(query_id=77, content_id=CONTENT_ID, token=TOKEN, padding=3),
        b"SH\x02\x10\x00\x00\x00\x4d" + CONTENT_ID_BYTES + TOKEN + b"\x00\x00\x00",
    ),
    (
        Have(query_id=77, content_id=CONTENT_ID, chunks=ChunkSet(10, [0, 2, 9]), token=TOKEN),
        b"SH\x02\x11\x00\x00\x00\x4d"
        + CONTENT_ID_BYTES
        + TOKEN
        + b"\x00\x00\x00\x0a"
        + b"\xa0\x40",
    ),
]


@pytest.mark.parametrize(("message", "golden"), GOLDEN, ids=lambda v: type(v).__name__)
def test_each_message_type_encodes_to_exact_bytes_and_back(message: Message, golden: bytes) -> None:
    assert encode_datagram(message) == golden
    assert decode_datagram(golden) == message


def test_every_message_type_has_a_golden_test() -> None:
    assert {type(message) for message, _ in GOLDEN} == set(Message.__args__)  # type: ignore[attr-defined]


def _golden(kind: type) -> tuple[Message, bytes]:
    return next((message, golden) for message, golden in GOLDEN if type(message) is kind)


def test_the_hot_path_data_codec_is_the_golden_one() -> None:
    # The transfer engine builds and reads every DATA with these, not with
    # encode_datagram/decode_datagram: they must give the same exact bytes.
    message, golden = _golden(Data)
    assert isinstance(message, Data)
    fields = (message.request_id, message.packet_number, message.segment_index)
    assert encode_data(*fields, message.timestamp_us, memoryview(b"xabcx")[1:4]) == golden
    assert pull_data_header(golden) == (*fields, message.timestamp_us)
    assert golden[DATA_HEADER_SIZE:] == message.payload


@pytest.mark.parametrize(
    "datagram",
    [
        b"SH\x02\x02" + bytes(16),  # no payload: for decode_datagram to call malformed
        b"SH\x03\x02" + bytes(17),  # another version
        b"SH\x02\x03" + bytes(17),  # another type
        b"XX\x02\x02" + bytes(17),  # not shoal
        b"SH\x02",
    ],
)
def test_the_hot_path_data_reader_leaves_everything_else_to_the_decoder(datagram: bytes) -> None:
    assert pull_data_header(datagram) is None


def test_the_hot_path_ack_codec_is_the_golden_one() -> None:
    message, golden = _golden(Ack)
    assert isinstance(message, Ack)
    bounds = [bound for pair in message.ranges for bound in pair]
    assert (
        encode_ack(
            message.request_id,
            message.largest_packet_number,
            message.ack_delay_us,
            message.one_way_delay_us,
            message.cumulative,
            message.receive_window,
            bounds,
        )
        == golden
    )
    # No ranges: the count byte says 0 and nothing follows.
    assert encode_ack(9, 40, 1500, 123456, 10, 2048) == golden[: 4 + 24] + b"\x00"


def test_version_error_is_readable_whatever_version_it_carries() -> None:
    # The version error is how peers of different versions learn about each other, so
    # its layout never changes and any version number in its prefix is accepted.
    assert decode_datagram(b"SH\x09\x06\x02\x05") == VersionError(2, 5)


@pytest.mark.parametrize(
    ("datagram", "error"),
    [
        (b"", MalformedDatagram),
        (b"S", MalformedDatagram),
        (b"XX\x01\x05\x00\x00\x00\x01", WrongMagic),
        (b"SH\x04\x05\x00\x00\x00\x01", UnsupportedProtocolVersion),
        (b"SH\x01\x05\x00\x00\x00\x01", UnsupportedProtocolVersion),  # version 1 is gone
        (b"SH\x00\x05\x00\x00\x00\x01", UnsupportedProtocolVersion),
        (b"SH\x02\x7f\x00\x00\x00\x01", MalformedDatagram),  # unknown type
        (b"SH\x02\x05\x00\x00\x00", MalformedDatagram),  # truncated cancel
        (b"SH\x02\x05\x00\x00\x00\x01\x00", MalformedDatagram),  # trailing byte
        (b"SH\x02\x02" + bytes(16), MalformedDatagram),  # data without payload
        (b"SH\x02\x04\x00\x00\x00\x01\x63", MalformedDatagram),  # unknown refusal reason
        (b"SH\x02\x04\x00\x00\x00\x01\xff", MalformedDatagram),  # local-only reason
        (b"SH\x02\x06\x03\x01", MalformedDatagram),  # empty version range
        (b"SH\x02\x02" + bytes(16) + bytes(65508), MalformedDatagram),  # larger than UDP
    ],
)
def test_bad_datagrams_raise_the_named_error(datagram: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_datagram(datagram)
    assert issubclass(error, MalformedDatagram)


def _ack_bytes(cumulative: int, ranges: list[tuple[int, int]], count: int | None = None) -> bytes:
    buf = Buffer()
    buf.push_bytes(b"SH\x02\x03")
    for value in (1, 0, 0, 0, cumulative, 64):
        buf.push_uint32(value)
    buf.push_uint8(len(ranges) if count is None else count)
    for start, end in ranges:
        buf.push_uint32(start)
        buf.push_uint32(end)
    return buf.data()


@pytest.mark.parametrize(
    "ranges",
    [
        [(5, 5)],  # empty range
        [(8, 6)],  # reversed
        [(3, 6)],  # starts below the cumulative point
        [(4, 6)],  # touches the cumulative point (should have been merged into it)
        [(6, 9), (9, 12)],  # adjacent ranges
        [(10, 12), (6, 8)],  # descending
    ],
)
def test_ack_ranges_must_ascend_above_the_cumulative_point(ranges: list[tuple[int, int]]) -> None:
    with pytest.raises(MalformedDatagram):
        decode_datagram(_ack_bytes(4, ranges))


def test_ack_with_too_many_ranges_is_malformed() -> None:
    ranges = [(10 + 3 * i, 11 + 3 * i) for i in range(MAX_ACK_RANGES + 1)]
    with pytest.raises(MalformedDatagram):
        decode_datagram(_ack_bytes(4, ranges))


def test_have_bitmap_with_bits_beyond_the_last_chunk_is_malformed() -> None:
    datagram = (
        b"SH\x02\x11\x00\x00\x00\x01" + CONTENT_ID_BYTES + TOKEN + b"\x00\x00\x00\x0a" + b"\xff\xff"
    )
    with pytest.raises(MalformedDatagram):
        decode_datagram(datagram)


def test_chunk_request_with_zero_length_is_malformed() -> None:
    golden = GOLDEN[0][1]
    # prefix 4 + request ID 4 + token 8 + content ID 32 + chunk index 4: length at 52.
    zero_length = golden[:52] + b"\x00\x00\x00\x00" + golden[56:]
    with pytest.raises(MalformedDatagram):
        decode_datagram(zero_length)


# -- property tests -----------------------------------------------------------------------


# 4,000 + 3,000 + 5,000 = 12,000 examples per run, a few seconds.
def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )


def _decodes_or_raises_malformed(datagram: bytes) -> None:
    try:
        message = decode_datagram(datagram)
    except MalformedDatagram:
        return
    # Whatever decodes must encode back to the same bytes (one encoding per message;
    # only a version error may carry a foreign version number).
    assert encode_datagram(message, version=datagram[2]) == datagram


@_fuzz(4_000)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_malformed(datagram: bytes) -> None:
    _decodes_or_raises_malformed(datagram)


@_fuzz(3_000)
@given(st.binary(max_size=120).map(lambda tail: b"SH\x02" + tail))
def test_random_bodies_behind_a_valid_prefix_decode_or_raise_malformed(datagram: bytes) -> None:
    _decodes_or_raises_malformed(datagram)


@st.composite
def _mutated_messages(draw: st.DrawFn) -> bytes:
    _, golden = draw(st.sampled_from(GOLDEN))
    data = bytearray(golden)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "extend", "delete"]))
        if action == "flip" and data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif action == "extend":
            data.extend(draw(st.binary(min_size=1, max_size=16)))
        elif action == "delete" and data:
            del data[draw(st.integers(0, len(data) - 1))]
    return bytes(data)


@_fuzz(5_000)
@given(_mutated_messages())
def test_mutated_valid_messages_decode_or_raise_malformed(datagram: bytes) -> None:
    _decodes_or_raises_malformed(datagram)


def test_who_has_padding_must_be_zero() -> None:
    golden = GOLDEN[-2][1]
    with pytest.raises(MalformedDatagram):
        decode_datagram(golden[:-1] + b"\x01")


def test_a_padded_who_has_is_at_least_half_its_largest_answer() -> None:
    from shoal.wire.messages import MAX_HAVE_CHUNKS, who_has_padding

    for count in (1, 8, 1024, MAX_HAVE_CHUNKS, None):
        query = encode_datagram(WhoHas(1, CONTENT_ID, padding=who_has_padding(count)))
        answer = encode_datagram(Have(1, CONTENT_ID, ChunkSet.full(count or MAX_HAVE_CHUNKS)))
        assert len(answer) + len(query) <= 3 * len(query)


def test_the_largest_have_fits_a_1400_byte_datagram() -> None:
    from shoal.wire.messages import MAX_HAVE_CHUNKS

    largest = Have(1, CONTENT_ID, ChunkSet.full(MAX_HAVE_CHUNKS))
    assert len(encode_datagram(largest)) == 1400
    too_many = encode_datagram(Have(1, CONTENT_ID, ChunkSet.full(MAX_HAVE_CHUNKS + 8)))
    with pytest.raises(MalformedDatagram):
        decode_datagram(too_many)


def test_decode_counted_counts_each_drop_by_cause_and_passes_messages_through() -> None:
    from dataclasses import dataclass

    from shoal.wire.decoding import (
        CONTROL_VERSION_ERROR_REPLY,
        VERSION_ERROR_REPLY,
        Undecodable,
        decode_counted,
    )

    @dataclass
    class Drops:
        wrong_magic: int = 0
        unsupported_version: int = 0
        malformed: int = 0

    drops = Drops()
    cancel = encode_datagram(Cancel(7))
    assert decode_counted(decode_datagram, cancel, drops) == Cancel(7)
    assert decode_counted(decode_datagram, b"XX\x02\x05", drops) is Undecodable.WRONG_MAGIC
    assert decode_counted(decode_datagram, b"SH\x09\x05", drops) is (
        Undecodable.UNSUPPORTED_VERSION
    )
    assert decode_counted(decode_datagram, cancel[:-1], drops) is Undecodable.MALFORMED
    assert drops == Drops(wrong_magic=1, unsupported_version=1, malformed=1)
    # The reply to a version we do not speak: this build's range, 6 bytes.
    assert VERSION_ERROR_REPLY == b"SH\x02\x06\x02\x03"
    # The control channel's: it has no version 3.
    assert CONTROL_VERSION_ERROR_REPLY == b"SH\x02\x06\x02\x02"


def test_a_whole_chunks_request_is_the_bytes_a_version_2_peer_reads() -> None:
    # Offset 0 is sent as version 2 with no offset field: byte for byte what a peer of
    # the previous build reads (the first golden above), whatever the version asked.
    message, golden = _golden(ChunkRequest)
    assert isinstance(message, ChunkRequest) and message.offset == 0
    assert encode_datagram(message) == golden and golden[2] == 2
    # Version 3 with an offset of 0 is read as the whole chunk; other types read in 3.
    assert decode_datagram(b"SH\x03" + golden[3:] + bytes(4)) == message
    assert decode_datagram(b"SH\x03\x05\xde\xad\xbe\xef") == Cancel(0xDEADBEEF)


def test_a_version_2_request_cannot_carry_an_offset_and_a_version_3_one_must() -> None:
    _, golden = _golden(ChunkRequest)
    with pytest.raises(MalformedDatagram):  # version 2 with 4 bytes more: trailing bytes
        decode_datagram(golden + b"\x00\x00\x05\x64")
    with pytest.raises(MalformedDatagram):  # version 3 without its offset: truncated
        decode_datagram(b"SH\x03" + golden[3:])
