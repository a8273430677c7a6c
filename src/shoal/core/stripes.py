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

DEFAULT_STRIPES = 6
"""The server's default cap (``ServerSettings.max_stripes``). The holders' uplinks
together must carry new chunks as fast as the WAN brings them (K x u >= C_wan: 5 for
20 Mbit/s uplinks behind 100 Mbit/s); beyond that more holders only add flows from the
server sharing the WAN, each chunk arriving later (simulator, 8 clients: 6 holders
1.46 x T_lb1 on 20 Mbit/s uplinks, as 8 do; on 1 Gbit/s uplinks 2.48 x with 6, 3.16 x
and a chunk lost and fetched again with 8)."""


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
