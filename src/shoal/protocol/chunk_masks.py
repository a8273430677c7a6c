"""Chunk sets as int bit masks, for the picker's one-AND tests (``shoal.protocol.swarm``)."""

from __future__ import annotations

import functools

from shoal.core.chunkset import ChunkSet


@functools.cache
def chunk_bits(count: int) -> list[int]:
    """Each chunk's bit in a mask of ``count`` chunks (``mask_of``); shared by every
    picker of a content (read only)."""
    width = (count + 7) // 8 * 8
    return [1 << (width - 1 - index) for index in range(count)]


def mask_of(chunks: ChunkSet) -> int:
    """A chunk set as an int: chunk i is bit ``width - 1 - i`` (``ChunkSet.to_bytes``)."""
    return int.from_bytes(chunks.to_bytes(), "big")


def asks_alike(before: int, after: int, have: int, in_flight: int, every: int) -> bool:
    """Does a known peer's change of holding from ``before`` to ``after`` (masks) leave
    every ask of a chunk picker as it was (``ChunkPicker._idle_until``)? Yes if it
    changed only in chunks we hold (``have``), or it gained only chunks already in
    flight while some missing chunk is not (no endgame): before the endgame a peer is
    asked only chunks in flight nowhere, and more holders only reorder those."""
    changed = (before ^ after) & ~have
    if not changed:
        return True
    return not changed & (before | ~in_flight) and bool(every & ~have & ~in_flight)
