"""Verified chunks on their way to the cache: which writes are unanswered, and their bytes.

A chunk the transfer engine verified becomes one ``WriteChunk`` effect
(``shoal.client.disk``), at most once while its write is unanswered; the bytes of the
unanswered writes are the disk's backlog, which stops new requests at
``AgentConfig.write_backlog_bytes`` (``DownloadsMachine.schedule``). Until its write is
answered, a chunk is served to peers from these bytes (``pending``): they were hashed
against the manifest on receipt, and a relay hop need not wait for the disk.
"""

from __future__ import annotations

from shoal.client.disk import ChunkBytes, WriteChunk
from shoal.core.ids import ContentId
from shoal.protocol.transfer import Address


class ChunkWrites:
    """Writes queued for the shell and writes it has not answered yet."""

    def __init__(self) -> None:
        self._queued: list[WriteChunk] = []
        self._unanswered: dict[tuple[ContentId, int], ChunkBytes] = {}
        self.backlog_bytes = 0
        """Bytes of the writes not answered yet (queued or being written)."""

    def add(self, content_id: ContentId, chunk_index: int, data: ChunkBytes, peer: Address) -> None:
        """Queue the chunk's write, unless the same chunk's write is still unanswered."""
        key = (content_id, chunk_index)
        if key in self._unanswered:
            return
        self._unanswered[key] = data
        self.backlog_bytes += len(data)
        self._queued.append(WriteChunk(content_id, chunk_index, data, peer))

    def has_queued(self) -> bool:
        """Whether ``take`` has writes to give."""
        return bool(self._queued)

    def take(self) -> list[WriteChunk]:
        """The writes queued since the last call, for the shell to perform."""
        writes, self._queued = self._queued, []
        return writes

    def answered(self, write: WriteChunk) -> bool:
        """The shell performed ``write``; False if it was not unanswered (a repeat)."""
        key = (write.content_id, write.chunk_index)
        if key not in self._unanswered:
            return False
        del self._unanswered[key]
        self.backlog_bytes -= len(write.data)
        return True

    def pending(self, content_id: ContentId, chunk_index: int) -> ChunkBytes | None:
        """The verified bytes of the chunk if its write is not answered yet, else None."""
        return self._unanswered.get((content_id, chunk_index))
