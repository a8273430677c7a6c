"""Faults injected on purpose, for the lab and the tests: never enabled by default."""

from __future__ import annotations

from shoal.core.ids import ContentId
from shoal.store.content_store import ContentStore


class CorruptingStore(ContentStore):
    """A cache that serves every chunk with its first byte flipped: a lying peer.

    ``python -m shoal_dev.lab.lying_client`` (``lying_client.py``) uses it, so that the
    ``corrupt-peer`` scenario runs a real process that peers must catch and ban.
    """

    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
        data = bytearray(super().read_chunk(content_id, chunk_index))
        if data:
            data[0] ^= 0xFF
        return bytes(data)
