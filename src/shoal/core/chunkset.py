"""A set of chunk indexes as a fixed-size bitmap.

Used for the chunks a cache holds verified, and for availability announced to peers.
Bit ``i`` of the bitmap is bit ``7 - i % 8`` of byte ``i // 8`` (most significant first,
as BitTorrent's bitfield), and spare bits in the last byte are always zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class ChunkSet:
    """Which of ``count`` chunks are present."""

    __slots__ = ("_bits", "_count", "_present")

    def __init__(self, count: int, present: Iterable[int] = ()) -> None:
        if count < 0:
            raise ValueError("chunk count must not be negative")
        self._count = count
        self._bits = bytearray((count + 7) // 8)
        self._present = 0
        for chunk_index in present:
            self.add(chunk_index)

    @classmethod
    def full(cls, count: int) -> ChunkSet:
        return cls(count, range(count))

    @classmethod
    def from_bytes(cls, count: int, bitmap: bytes) -> ChunkSet:
        """Decode a bitmap; ValueError when its length or spare bits are wrong."""
        if count < 0:
            raise ValueError("chunk count must not be negative")
        size = (count + 7) // 8
        if len(bitmap) != size:
            raise ValueError(f"bitmap of {len(bitmap)} bytes for {count} chunks (expected {size})")
        spare = size * 8 - count
        if spare and bitmap[-1] & ((1 << spare) - 1):
            raise ValueError("bitmap has bits set beyond the last chunk")
        # Every HAVE received is decoded here, and every picker keeps a copy: one
        # popcount of the whole bitmap, not one per byte.
        return cls._of(count, bytearray(bitmap), int.from_bytes(bitmap, "big").bit_count())

    @classmethod
    def _of(cls, count: int, bits: bytearray, present: int) -> ChunkSet:
        """A set from checked parts (``from_bytes``, ``copy``), without ``__init__``."""
        chunk_set = cls.__new__(cls)
        chunk_set._count = count
        chunk_set._bits = bits
        chunk_set._present = present
        return chunk_set

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    @property
    def count(self) -> int:
        """Number of chunks the set ranges over (present or not)."""
        return self._count

    def _check(self, chunk_index: int) -> None:
        if not 0 <= chunk_index < self._count:
            raise IndexError(f"chunk index {chunk_index} out of range 0..{self._count - 1}")

    def add(self, chunk_index: int) -> bool:
        """Mark a chunk present; return False if it already was."""
        self._check(chunk_index)
        mask = 0x80 >> (chunk_index % 8)
        if self._bits[chunk_index // 8] & mask:
            return False
        self._bits[chunk_index // 8] |= mask
        self._present += 1
        return True

    def discard(self, chunk_index: int) -> None:
        self._check(chunk_index)
        mask = 0x80 >> (chunk_index % 8)
        if self._bits[chunk_index // 8] & mask:
            self._bits[chunk_index // 8] &= ~mask & 0xFF
            self._present -= 1

    def __contains__(self, chunk_index: object) -> bool:
        if not isinstance(chunk_index, int) or not 0 <= chunk_index < self._count:
            return False
        return bool(self._bits[chunk_index // 8] & (0x80 >> (chunk_index % 8)))

    def __len__(self) -> int:
        return self._present

    def __iter__(self) -> Iterator[int]:
        return (index for index in range(self._count) if index in self)

    def missing(self) -> Iterator[int]:
        """Chunk indexes not present, in order."""
        return (index for index in range(self._count) if index not in self)

    @property
    def complete(self) -> bool:
        return self._present == self._count

    def copy(self) -> ChunkSet:
        return ChunkSet._of(self._count, bytearray(self._bits), self._present)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkSet):
            return NotImplemented
        return self._count == other._count and self._bits == other._bits

    def __hash__(self) -> int:
        return hash((self._count, bytes(self._bits)))

    def __repr__(self) -> str:
        return f"ChunkSet({self._present}/{self._count})"
