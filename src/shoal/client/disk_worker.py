"""The asyncio shell's disk runner: the agent's ``WriteChunk`` effects, off the event loop.

One thread performs the writes (``shoal.client.disk.perform_writes``) in the order they
were submitted, taking everything queued meanwhile as one batch, and hands the
``ChunkWritten`` events back to the event loop with ``call_soon_threadsafe``. The loop
keeps receiving, acknowledging and serving while a write or an ``fdatasync`` takes its
time. How many bytes may wait is bounded by the agent (``write_backlog_bytes``), which
asks for no new chunk until the disk catches up.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

from shoal.client.disk import ChunkWritten, VerifiedChunkStore, WriteChunk, perform_writes

log = logging.getLogger("shoal.client")


class DiskWorker:
    """Run ``WriteChunk`` effects in a thread; report each batch to ``on_written`` on
    the event loop."""

    def __init__(
        self,
        store: VerifiedChunkStore,
        loop: asyncio.AbstractEventLoop,
        on_written: Callable[[list[ChunkWritten]], None],
    ) -> None:
        self._store = store
        self._loop = loop
        self._on_written = on_written
        self._queue: queue.SimpleQueue[WriteChunk | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="shoal-disk", daemon=True)
        self._thread.start()

    def submit(self, writes: list[WriteChunk]) -> None:
        for write in writes:
            self._queue.put(write)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = [first], False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            results = perform_writes(self._store, batch)
            try:
                self._loop.call_soon_threadsafe(self._on_written, results)
            except RuntimeError:  # the loop is closed: the chunks are written all the same
                log.debug("disk worker: %d writes done after the loop closed", len(results))
            if stopping:
                return

    def close(self, timeout: float = 30.0) -> None:
        """Finish the writes already submitted, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
