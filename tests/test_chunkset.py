import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.chunkset import ChunkSet


@given(
    st.integers(min_value=0, max_value=300).flatmap(
        lambda count: st.tuples(st.just(count), st.sets(st.integers(0, max(count - 1, 0))))
    )
)
def test_bitmap_round_trips_and_counts(count_and_members: tuple[int, set[int]]) -> None:
    count, members = count_and_members
    members = {index for index in members if index < count}
    chunk_set = ChunkSet(count, members)
    decoded = ChunkSet.from_bytes(count, chunk_set.to_bytes())
    assert set(decoded) == members
    assert len(decoded) == len(members)
    assert set(decoded.missing()) == set(range(count)) - members
    assert decoded.complete == (len(members) == count)


def test_bit_order_is_most_significant_first() -> None:
    assert ChunkSet(10, [0, 9]).to_bytes() == bytes([0b1000_0000, 0b0100_0000])


def test_bitmaps_with_wrong_length_or_spare_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="expected 2"):
        ChunkSet.from_bytes(10, b"\x00")
    with pytest.raises(ValueError, match="beyond the last chunk"):
        ChunkSet.from_bytes(10, b"\x00\x01")


def test_out_of_range_indexes_are_refused_on_add() -> None:
    with pytest.raises(IndexError):
        ChunkSet(4).add(4)
    assert 4 not in ChunkSet(4)
