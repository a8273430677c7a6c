"""Packing: chunk boundaries for every allowed chunk size, short reads, streaming."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.chunking import ALLOWED_CHUNK_SIZES
from shoal.core.packing import READ_BLOCK_SIZE, pack_stream


def reference_hashes(data: bytes, chunk_size: int) -> list[bytes]:
    """Chunk hashes computed the obvious way, independent of the packer."""
    return [
        hashlib.sha256(data[start : start + chunk_size]).digest()
        for start in range(0, len(data), chunk_size)
    ]


class ShortReads(io.RawIOBase):
    """A stream that returns at most a random number of bytes per read, like a pipe."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = memoryview(data)
        self._position = 0
        self._random = random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        remaining = len(self._data) - self._position
        count = min(len(buffer), remaining, self._random.randint(1, 200_000))
        buffer[:count] = self._data[self._position : self._position + count]
        self._position += count
        return count


sizes_around_boundaries = st.builds(
    lambda multiple, delta, unit: max(0, multiple * unit + delta),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=-2, max_value=2),
    st.sampled_from([1, 4096, READ_BLOCK_SIZE]),
)


@settings(max_examples=60)
@given(
    chunk_size=st.sampled_from(ALLOWED_CHUNK_SIZES),
    boundary=st.sampled_from(["empty", "one", "exact", "partial", "around"]),
    multiple=st.integers(min_value=1, max_value=3),
    around=sizes_around_boundaries,
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    short_reads=st.booleans(),
)
def test_pack_matches_a_reference_at_every_boundary(
    chunk_size: int,
    boundary: str,
    multiple: int,
    around: int,
    seed: int,
    short_reads: bool,
) -> None:
    size = {
        "empty": 0,
        "one": 1,
        "exact": multiple * chunk_size,
        "partial": multiple * chunk_size + 1 + seed % (chunk_size - 1),
        "around": around,
    }[boundary]
    data = random.Random(seed).randbytes(size)
    stream = ShortReads(data, seed) if short_reads else io.BytesIO(data)
    manifest = pack_stream(stream, chunk_size)  # type: ignore[arg-type]
    assert manifest.size == size
    assert manifest.sha256 == hashlib.sha256(data).digest()
    assert list(manifest.chunk_hashes) == reference_hashes(data, chunk_size)
    assert manifest.chunk_count == -(-size // chunk_size)
    if size:
        last = manifest.chunk_length(manifest.chunk_count - 1)
        assert last == size - (manifest.chunk_count - 1) * chunk_size


def test_a_zero_byte_package_is_valid_content() -> None:
    manifest = pack_stream(io.BytesIO(b""))
    assert manifest.size == 0
    assert manifest.chunk_count == 0
    assert manifest.sha256 == hashlib.sha256(b"").digest()


def test_progress_is_reported_up_to_the_full_size() -> None:
    seen: list[int] = []
    data = bytes(3 * READ_BLOCK_SIZE + 5)
    pack_stream(io.BytesIO(data), on_progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == len(data)


@pytest.mark.parametrize("chunk_size", ALLOWED_CHUNK_SIZES)
def test_every_allowed_chunk_size_at_every_kind_of_boundary(chunk_size: int) -> None:
    data = random.Random(chunk_size).randbytes(2 * chunk_size + 1)
    for size in (
        0,
        1,
        chunk_size - 1,
        chunk_size,
        chunk_size + 1,
        2 * chunk_size,
        2 * chunk_size + 1,
    ):
        manifest = pack_stream(io.BytesIO(data[:size]), chunk_size)
        assert list(manifest.chunk_hashes) == reference_hashes(data[:size], chunk_size)
        assert manifest.sha256 == hashlib.sha256(data[:size]).digest()
