"""The agent's disk I/O as effects: what to write, and how it went.

Theory of operation
-------------------
``AgentCore`` does not write to its cache itself. For each chunk the transfer engine
has verified in memory (``ChunkReceived``: hashed once, on receipt), it emits a
``WriteChunk`` effect; whoever runs the agent performs it and hands back a
``ChunkWritten`` event (``AgentCore.chunk_written``). Only then is the chunk held: the
store marks it verified (durably), discovery announces it, peers may be served it, the
server hears of it, and the download may complete. A crash before that loses only
chunks nobody was told about.

Two runners share ``perform_writes``, the one piece of code that turns effects into
events:

* the asyncio shell, ``DiskWorker`` (``shoal.client.disk_worker``): one thread, off the
  event loop, which takes every write queued meanwhile as one batch (one ``fdatasync``
  and one sidecar update per content per batch);
* the simulator and tests (virtual time, deterministic): inline, in ``AgentCore.poll``
  (``AgentCore(..., disk_inline=True)``, the default).

Back-pressure lives in the agent, so it is the same in both: while the bytes of
unanswered ``WriteChunk`` effects reach ``AgentConfig.write_backlog_bytes``, the agent
asks for no new chunk (requests already in flight still land).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shoal.core.errors import ShoalError
from shoal.core.ids import ContentId

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class WriteChunk:
    """Effect: store this chunk, already verified against the manifest (no re-hash)."""

    content_id: ContentId
    chunk_index: int
    data: bytes
    peer: Address
    """Who sent it (for the agent's accounting when the write fails)."""


@dataclass(frozen=True, slots=True)
class ChunkWritten:
    """Event: a ``WriteChunk`` ran. ``error`` empty: the chunk is durably held, and
    ``complete`` says whether its content is now whole."""

    write: WriteChunk
    complete: bool
    error: str = ""


class VerifiedChunkStore(Protocol):
    """What performing writes needs of ``shoal.store.ContentStore``."""

    def write_verified_chunks(
        self, content_id: ContentId, chunks: Sequence[tuple[int, bytes]]
    ) -> bool: ...


def perform_writes(store: VerifiedChunkStore, writes: Sequence[WriteChunk]) -> list[ChunkWritten]:
    """Run ``writes`` (a batch: one durable commit per content) and say how each went."""
    by_content: dict[ContentId, list[WriteChunk]] = {}
    for write in writes:
        by_content.setdefault(write.content_id, []).append(write)
    results: list[ChunkWritten] = []
    for content_id, batch in by_content.items():
        try:
            complete = store.write_verified_chunks(
                content_id, [(write.chunk_index, write.data) for write in batch]
            )
        except ShoalError as error:  # StoreError (disk full, removed), a wrong length
            results.extend(ChunkWritten(write, False, str(error)) for write in batch)
        else:
            results.extend(ChunkWritten(write, complete) for write in batch)
    return results
