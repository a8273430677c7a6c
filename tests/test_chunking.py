import pytest

from shoal.core.chunking import (
    ALLOWED_CHUNK_SIZES,
    chunk_count,
    chunk_length,
    parse_size,
    validate_chunk_size,
)
from shoal.core.errors import InvalidChunkSize


def test_allowed_sizes_are_the_powers_of_two_from_64k_to_16m() -> None:
    assert tuple(2**shift for shift in range(16, 25)) == ALLOWED_CHUNK_SIZES


@pytest.mark.parametrize("bad", [0, 1, 3, 65535, 65537, 32 * 1024, 3 * 1024 * 1024, 2**25, -65536])
def test_chunk_sizes_outside_the_rule_are_refused_with_the_rule(bad: int) -> None:
    with pytest.raises(InvalidChunkSize, match="power of two from 65536"):
        validate_chunk_size(bad)


@pytest.mark.parametrize(
    ("text", "value"),
    [("65536", 65536), ("64K", 65536), ("64KiB", 65536), ("1m", 1 << 20), ("16MiB", 1 << 24)],
)
def test_sizes_parse_with_binary_suffixes(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_a_size_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(InvalidChunkSize, match="not a size"):
        parse_size("lots")


def test_zero_bytes_have_no_chunks_and_the_last_chunk_is_short() -> None:
    assert chunk_count(0, 65536) == 0
    assert chunk_count(1, 65536) == 1
    assert chunk_count(65536, 65536) == 1
    assert chunk_count(65537, 65536) == 2
    assert chunk_length(65537, 65536, 1) == 1
    with pytest.raises(IndexError):
        chunk_length(65537, 65536, 2)


def test_default_chunk_size_keeps_huge_packages_announceable() -> None:
    from shoal.core.chunking import MAX_CHUNKS_PER_PACKAGE, chunk_size_for

    gib = 1 << 30
    assert chunk_size_for(128 << 20) == 1 << 20  # from 128 MiB: the 1 MiB default
    assert chunk_size_for(8 * gib) == 1 << 20  # exactly 8192 chunks
    assert chunk_size_for(8 * gib + 1) == 2 << 20
    assert chunk_count(100 * gib, chunk_size_for(100 * gib)) <= MAX_CHUNKS_PER_PACKAGE
    assert chunk_size_for(10_000 * gib) == 16 << 20  # the largest chunk size caps it


def test_default_chunk_size_gives_a_small_package_enough_chunks_for_a_swarm() -> None:
    from shoal.core.chunking import (
        DEFAULT_CHUNK_SIZE,
        MIN_CHUNKS_PER_PACKAGE,
        MIN_DEFAULT_CHUNK_SIZE,
        chunk_size_for,
    )

    mib = 1 << 20
    # An 8 MiB package in 1 MiB chunks had 8 chunks for an office of 16 clients: a
    # chunk is passed on only once whole, so the swarm could not pipeline (issue 9).
    assert chunk_size_for(8 * mib) == 128 * 1024
    assert chunk_size_for(16 * mib) == 128 * 1024
    assert chunk_size_for(32 * mib) == 256 * 1024
    assert chunk_size_for(127 * mib) == 512 * 1024
    for size in (mib, 8 * mib + 1, 20 * mib, 100 * mib, 128 * mib - 1, 128 * mib):
        chunk_size = chunk_size_for(size)
        assert MIN_DEFAULT_CHUNK_SIZE <= chunk_size <= DEFAULT_CHUNK_SIZE
        assert chunk_count(size, chunk_size) >= MIN_CHUNKS_PER_PACKAGE or (
            chunk_size == MIN_DEFAULT_CHUNK_SIZE
        )
        # The largest such size: twice as large would give too few chunks.
        assert chunk_size == DEFAULT_CHUNK_SIZE or (
            chunk_count(size, 2 * chunk_size) < MIN_CHUNKS_PER_PACKAGE
        )
    # Small packages: the smallest default (a chunk's own costs, see MIN_DEFAULT_CHUNK_SIZE).
    assert chunk_size_for(0) == chunk_size_for(4 * mib) == MIN_DEFAULT_CHUNK_SIZE == 128 * 1024
