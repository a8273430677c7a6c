"""Chunks the server sends a device off its stripes: the rest of one it had partly
received (issues 9 and 10).

A chunk whose transfer from the server was cut (the server restarted, the office's WAN
went down for longer than a transfer waits) is kept by its receiver as a prefix and
asked again with an offset (``TransferEngine.request_chunk``). Meanwhile the chunk's
stripe may have passed to another holder (its lease lapsed): that holder would fetch
the whole chunk over the WAN again, and the prefix's bytes would have crossed for
nothing. So a request with an offset, for a chunk not yet in the office, is served to
the device that asks, stripe or not, and the chunk is held back from every other
device of the office for ``HOLD`` seconds or until it is delivered: the office's WAN
carries the remainder, not a second copy. (Before the device asks, the chunk is held for
it from when its stripe passes on: ``shoal.server.cut_chunks``.)

Bounded against a device that asks with offsets to pull chunks out of the stripes' order
(or to hold them back from their holders): ``PER_DEVICE`` such chunks at once per
content (a client asks the server for a few chunks at a time, and one restart cuts
those), each held for ``HOLD`` at most, ``MAX_CHUNKS`` in all. What it can make the
server send is what a stripe holder may fetch: chunks the office does not hold.
"""

from __future__ import annotations

from collections import OrderedDict

from shoal.core.ids import ContentId

HOLD = 10.0
"""Seconds a resumed chunk is held back from the office's other devices (two transfer
timeouts): its remainder arrives well within it, or the resume failed."""
PER_DEVICE = 4
"""Resumed chunks of one content a device may have at once off its stripes."""
MAX_CHUNKS = 4096
"""Resumed chunks remembered in all (the oldest forgotten first)."""

_Key = tuple[str, ContentId, int]


class Resumes:
    """Which device resumes which chunk, by (office, content, chunk index), and since when."""

    def __init__(self) -> None:
        self._chunks: OrderedDict[_Key, tuple[str, float]] = OrderedDict()

    def held_for_other(
        self, office: str, content_id: ContentId, device: str, chunk_index: int, now: float
    ) -> bool:
        """Is the chunk being resumed by another device of the office (within ``HOLD``)?"""
        held = self._chunks.get((office, content_id, chunk_index))
        return held is not None and held[0] != device and now - held[1] < HOLD

    def admit(
        self, office: str, content_id: ContentId, device: str, chunk_index: int, now: float
    ) -> bool:
        """May ``device`` resume the chunk off its stripes (within ``PER_DEVICE``)?"""
        key = (office, content_id, chunk_index)
        held = self._chunks.get(key)
        if held is None or held[0] != device:
            mine = sum(
                1
                for (held_office, held_content, _), (holder, since) in self._chunks.items()
                if holder == device
                and held_content == content_id
                and held_office == office
                and now - since < HOLD
            )
            if mine >= PER_DEVICE:
                return False
        self._chunks[key] = (device, now)
        self._chunks.move_to_end(key)
        while len(self._chunks) > MAX_CHUNKS:
            self._chunks.popitem(last=False)
        return True

    def delivered(self, office: str, content_id: ContentId, chunk_index: int) -> None:
        """The chunk is in the office: nothing to hold back any more."""
        self._chunks.pop((office, content_id, chunk_index), None)
