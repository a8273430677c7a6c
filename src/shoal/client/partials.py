"""Prefixes of chunks whose request ended before the chunk was whole (issues 9 and 10).

When a chunk's sender goes away mid-chunk (a P2P server restarted, a peer's process
crashed: ICMP port unreachable, or silence), the transfer engine hands back the
contiguous whole-segment prefix the request had received (``TransferTimedOut.prefix``,
``ChunkRefused.prefix``, what ``cancel`` returns). It is kept here until the chunk is
asked again, of whichever holder is asked next, which then sends the rest only (a
request with an offset, ``TransferEngine.request_chunk``). Nothing here is trusted:
the whole chunk, prefix included, is hashed once complete, and a resumed chunk that
fails (``ChunkCorrupted.resumed``) drops its prefix and is asked whole, its sender not
blamed (the bad bytes may be the prefix's).

Bounded: a prefix is kept only for a chunk asked and not yet held (it is taken when the
chunk is asked again, dropped when the chunk arrives), one per chunk (the longer one),
and ``MAX_PREFIX_BYTES`` in all, the oldest dropped first. A peer can make us keep only
bytes of a chunk we asked it for.
"""

from __future__ import annotations

from collections import OrderedDict

from shoal.core.ids import ContentId

MAX_PREFIX_BYTES = 8 * 1024 * 1024
"""Most prefix bytes kept at once (a few chunks' worth: those cut by one restart)."""


class Partials:
    """Chunk prefixes kept for a resumed request, by (content, chunk index)."""

    def __init__(self, max_bytes: int = MAX_PREFIX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._prefixes: OrderedDict[tuple[ContentId, int], bytes] = OrderedDict()
        self._bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._prefixes)

    def keep(self, content_id: ContentId, chunk_index: int, prefix: bytes) -> None:
        """A request for the chunk ended holding ``prefix``: keep it (the longer one)."""
        if not prefix or len(prefix) > self._max_bytes:
            return
        key = (content_id, chunk_index)
        held = self._prefixes.get(key)
        if held is not None:
            if len(held) >= len(prefix):
                return
            self._bytes -= len(held)
        self._prefixes[key] = prefix
        self._prefixes.move_to_end(key)
        self._bytes += len(prefix)
        while self._bytes > self._max_bytes:
            _, oldest = self._prefixes.popitem(last=False)
            self._bytes -= len(oldest)

    def chunks(self, content_id: ContentId) -> list[int]:
        """The chunks of ``content_id`` we hold a prefix of."""
        return [chunk for content, chunk in self._prefixes if content == content_id]

    def take(self, content_id: ContentId, chunk_index: int) -> bytes:
        """The chunk is asked again: its prefix (handed to the request), or b""."""
        prefix = self._prefixes.pop((content_id, chunk_index), b"")
        self._bytes -= len(prefix)
        return prefix

    def drop(self, content_id: ContentId, chunk_index: int) -> None:
        """The chunk is held: its prefix is of no use any more."""
        self._bytes -= len(self._prefixes.pop((content_id, chunk_index), b""))
