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
