"""Answering a peer's chunk request from a content store: shared by clients and servers."""

from __future__ import annotations

from typing import Protocol

from shoal.core.errors import ShoalError
from shoal.core.ids import ContentId
from shoal.protocol.transfer import ChunkRequested, RefusalReason, TransferEngine


class ChunkSource(Protocol):
    """What serving needs of a store: membership and verified (re-hashed) chunks."""

    def __contains__(self, content_id: object) -> bool: ...
    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes: ...


def serve_from(
    store: ChunkSource, engine: TransferEngine, event: ChunkRequested, now: float
) -> int:
    """Send the requested chunk if ``store`` holds it verified; else refuse it.

    Returns the bytes sent (0 when refused): ``NOT_FOUND`` for content or a chunk not
    held (or gone bad on disk), ``INVALID_REQUEST`` for a length that is not the chunk's.
    """
    reason = RefusalReason.NOT_FOUND
    if event.content_id in store:
        try:
            data = store.read_chunk(event.content_id, event.chunk_index)
        except (ShoalError, IndexError):
            pass
        else:
            if len(data) == event.chunk_length:
                engine.send_chunk(event.peer, event.request_id, data, now)
                return len(data)
            reason = RefusalReason.INVALID_REQUEST
    engine.refuse_chunk(event.peer, event.request_id, reason, now)
    return 0
