"""Serving this client's cache to the peers of its office.

Theory of operation
-------------------
A peer's ``ChunkRequested`` (on either data port) is served only in an office that
shares, only to a peer of this office, and only for content assigned to this client
(``may_serve``); else it is refused ``NOT_FOUND`` whatever the reason, so what the
cache holds is not told to strangers. An allowed request takes an upload slot
(``UploadSlots``: one set for both modes, which share one uplink), waits for one, or is
refused ``BUSY``.

A request that starts becomes a ``ReadChunk`` effect: the shell reads the chunk off the
event loop (the store re-hashes it) and answers ``chunk_read``, which sends it or
refuses it. With ``inline_reads`` (the simulator), the read runs at once, in the same
step. A chunk verified on receipt whose write to the cache is not answered yet is sent
from its bytes in memory (``pending``), at once: a relay hop through this client does
not wait for its disk (a write, an ``fdatasync`` and the sidecar's two ``fsync``: 1-1.3 ms
on the lab's disk, tens of milliseconds on a laptop's), and the chunk is not read back
and hashed again. An upload that ends (delivered, cancelled by the peer, timed out,
refused) frees its slot and starts the requests that waited for it.
"""

from __future__ import annotations

from collections.abc import Callable

from shoal.client.config import AgentConfig, ContentStoreLike
from shoal.client.counters import AgentCounters
from shoal.client.disk import ChunkBytes, ChunkRead, ReadChunk, perform_read, perform_reads
from shoal.core.ids import ContentId
from shoal.protocol.serving import Admission, UploadSlots, servable_part
from shoal.protocol.transfer import (
    Address,
    ChunkDelivered,
    ChunkRequested,
    LocalProtocolError,
    Mode,
    RefusalReason,
    RequestCancelled,
    TransferEngine,
    TransferTimedOut,
)

SenderEvent = ChunkRequested | ChunkDelivered | RequestCancelled | TransferTimedOut
"""The transfer events about our uploads (``TransferTimedOut`` with ``Role.SENDER``)."""


class ServingMachine:
    """Peers' chunk requests: admitted, read, sent (see the module docstring)."""

    def __init__(
        self,
        config: AgentConfig,
        store: ContentStoreLike,
        engines: dict[Mode, TransferEngine],
        counters: AgentCounters,
        may_serve: Callable[[str, object], bool],
        *,
        inline_reads: bool = True,
        pending: Callable[[ContentId, int], ChunkBytes | None] = lambda _c, _i: None,
    ) -> None:
        self.config = config
        self.store = store
        self.engines = engines
        self.counters = counters
        self.may_serve = may_serve
        self.inline_reads = inline_reads
        """Read at once (the simulator); False: the shell takes ``take_disk_reads``."""
        self.pending = pending
        """A verified chunk's bytes while its write is unanswered (``ChunkWrites``)."""
        self._reads: list[ReadChunk] = []
        self.uploads: UploadSlots[tuple[Mode, Address, int], tuple[Mode, ChunkRequested]] = (
            UploadSlots(
                target_rate=config.upload_target_rate,
                max_bytes=config.upload_budget_bytes,
            )
        )

    def on_event(self, mode: Mode, event: SenderEvent, now: float) -> None:
        if isinstance(event, ChunkRequested):
            self._on_requested(mode, event, now)
        elif isinstance(event, ChunkDelivered):
            self.counters.chunks_served += 1
            self._upload_ended(mode, event.peer, event.request_id, now, delivered=True)
        else:
            # An upload of ours ended, its slot frees. Its request ID is the peer's, not
            # one of our requests (taken for ours, it once dropped our request without
            # telling the picker: a chunk in flight for ever). One that timed out means
            # the peer stopped acknowledging: it sits out a penalty (UploadSlots).
            silent = isinstance(event, TransferTimedOut)
            self._upload_ended(
                mode, event.peer, event.request_id, now, delivered=False, silent=silent
            )

    def _on_requested(self, mode: Mode, event: ChunkRequested, now: float) -> None:
        if not self.may_serve(event.peer[0], event.content_id):
            # NOT_FOUND whatever the reason: what we cache is not told to strangers.
            self.engines[mode].refuse_chunk(
                event.peer, event.request_id, RefusalReason.NOT_FOUND, now
            )
            self.counters.requests_refused += 1
            self.counters.requests_refused_policy += 1
            return
        key = (mode, event.peer, event.request_id)
        unfair = self.uploads.refused_unfair
        admission = self.uploads.offer(
            key, (mode, event), now, event.chunk_length - event.offset, peer=event.peer[0]
        )
        if admission is Admission.START:
            self._start(mode, event, now)
        elif admission is Admission.REFUSE:
            self.engines[mode].refuse_chunk(event.peer, event.request_id, RefusalReason.BUSY, now)
            self.counters.requests_refused += 1
            self.counters.requests_refused_busy += 1
            if self.uploads.refused_unfair != unfair:
                self.counters.requests_refused_busy_turn += 1

    def _start(self, mode: Mode, event: ChunkRequested, now: float) -> None:
        if not self.may_serve(event.peer[0], event.content_id):
            # Unassigned while it waited for a slot.
            self.chunk_read(ChunkRead(_read_of(mode, event), None), now)
            return
        read = _read_of(mode, event)
        data = self.pending(event.content_id, event.chunk_index)
        if data is not None:
            self.chunk_read(_from_memory(read, data), now)
        elif self.inline_reads:
            self.chunk_read(perform_read(self.store, read), now)
        else:
            self._reads.append(read)

    def take_disk_reads(self) -> list[ReadChunk]:
        """Chunks to read for peers, by the shell off the event loop."""
        reads, self._reads = self._reads, []
        return reads

    def has_pending_reads(self) -> bool:
        """Whether ``take_disk_reads`` has reads to give."""
        return bool(self._reads)

    def perform_pending_reads(self, now: float) -> None:
        """Inline again (a test switched it back): run the reads that were left."""
        for result in perform_reads(self.store, self.take_disk_reads()):
            self.chunk_read(result, now)

    def chunk_read(self, result: ChunkRead, now: float) -> None:
        """The answer to a ``ReadChunk``: send the chunk, or refuse the request."""
        read = result.read
        engine = self.engines[read.mode]
        sent = 0
        try:
            if result.data is not None:
                engine.send_chunk(read.peer, read.request_id, result.data, now)
                sent = len(result.data)
            else:
                engine.refuse_chunk(read.peer, read.request_id, result.refusal, now)
        except LocalProtocolError:
            pass  # the request ended while it waited for a slot or the disk
        self.counters.bytes_served += sent
        if not sent:
            self.counters.requests_refused += 1
            self._upload_ended(read.mode, read.peer, read.request_id, now, delivered=False)

    def _upload_ended(
        self,
        mode: Mode,
        peer: Address,
        request_id: int,
        now: float,
        *,
        delivered: bool,
        silent: bool = False,
    ) -> None:
        """An upload ended: start the requests that waited for its slot or its memory."""
        for waiting_mode, waiting in self.uploads.finished(
            (mode, peer, request_id), now, delivered=delivered, silent=silent
        ):
            self._start(waiting_mode, waiting, now)


def _read_of(mode: Mode, event: ChunkRequested) -> ReadChunk:
    return ReadChunk(
        mode,
        event.peer,
        event.request_id,
        event.content_id,
        event.chunk_index,
        event.chunk_length,
        event.offset,
    )


def _from_memory(read: ReadChunk, data: ChunkBytes) -> ChunkRead:
    """``read`` answered from a verified chunk's bytes still in memory, by the rule that
    answers it from the cache (``servable_part``)."""
    part = servable_part(data, read.chunk_length, read.offset)
    if isinstance(part, RefusalReason):
        return ChunkRead(read, None, part)
    return ChunkRead(read, part)
