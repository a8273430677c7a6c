"""Stripes: which chunks of a content a rendezvous holder fetches over the WAN.

The server splits an office's one WAN copy of a content over several holders
(``shoal.server.rendezvous``): chunk ``i`` belongs to stripe ``i % stripes``, and a
holder is granted a set of stripes as a bit mask (bit ``s`` set: stripe ``s`` is its).
Interleaving, rather than contiguous ranges, lets every holder's first chunks arrive
at once, so every uplink of the office has something new to send from the start.
One stripe with mask 1 is every chunk (a single rendezvous point).
"""

from __future__ import annotations

from shoal.core.chunkset import ChunkSet

MAX_STRIPES = 64
"""A stripe mask fits in a u64 (``LEASE_REPLY``)."""


def in_stripes(chunk_index: int, stripes: int, mask: int) -> bool:
    """Is ``chunk_index`` in one of the stripes set in ``mask``?"""
    return stripes > 0 and bool(mask >> (chunk_index % stripes) & 1)


def stripe_chunks(chunk_count: int, stripes: int, mask: int) -> ChunkSet:
    """The chunks of a ``chunk_count``-chunk content in the stripes set in ``mask``."""
    chunks = ChunkSet(chunk_count)
    for chunk_index in range(chunk_count):
        if in_stripes(chunk_index, stripes, mask):
            chunks.add(chunk_index)
    return chunks
