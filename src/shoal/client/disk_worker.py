"""The asyncio shell's disk runners: the agent's disk effects, off the event loop.

Each runner is one thread that performs effects in the order they were submitted,
taking everything queued meanwhile as one batch, and hands the results back to the
event loop with ``call_soon_threadsafe``. The loop keeps receiving, acknowledging and
serving while a write, an ``fdatasync`` or a read takes its time.

* ``DiskWorker``: ``WriteChunk`` -> ``ChunkWritten`` (``perform_writes``: one
  ``fdatasync`` and one sidecar update per content per batch), and in order with them
  ``AddManifest`` -> ``ManifestAdded``, ``SetPinned`` and the partial files' effects
  (``perform_disk_effects``). A batch with no result (a prefix written, a pin set) wakes
  no one: the loop would only poll an agent that nothing changed.
  How many bytes may wait is bounded by the agent (``write_backlog_bytes``), which asks
  for no new chunk until the disk catches up.
* ``ReadWorker``: ``ReadChunk`` -> ``ChunkRead`` (``perform_reads``: each chunk read and
  re-hashed before it is served), in its own thread so that serving a peer never waits
  behind a write's ``fdatasync``. How many reads may wait is bounded by the agent's
  upload slots (``upload_budget_bytes``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from shoal.client.disk import (
    ChunkRead,
    ChunkSource,
    DiskEffect,
    DiskResult,
    ManagedStore,
    ReadChunk,
    perform_disk_effects,
    perform_reads,
)

log = logging.getLogger("shoal.client")

Effect = TypeVar("Effect")
Result = TypeVar("Result")


class EffectThread(Generic[Effect, Result]):
    """Run effects in a thread, in batches; report each batch's results to ``on_done``
    on the event loop."""

    def __init__(
        self,
        perform: Callable[[Sequence[Effect]], list[Result]],
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[Result]], None],
        name: str,
    ) -> None:
        self._perform = perform
        self._loop = loop
        self._on_done = on_done
        # One item per ``submit`` (a list), not per effect: each put may wake the
        # thread, and every wake-up is a GIL hand-over the event loop pays for.
        self._queue: queue.SimpleQueue[list[Effect] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, effects: Sequence[Effect]) -> None:
        if effects:
            self._queue.put(list(effects))

    def _run(self) -> None:
        while self._run_batch():
            pass

    def _run_batch(self) -> bool:
        """Wait for effects, perform all that are queued as one batch and hand their
        results to the loop; False once told to stop. A method of its own so that
        nothing of a finished batch stays referenced while the thread waits for the
        next: a batch holds chunks (1 MiB each), which an idle client would otherwise
        keep for as long as it idles."""
        first = self._queue.get()
        if first is None:
            return False
        batch, stopping = first, False
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                stopping = True
                break
            batch.extend(more)
        results = self._perform(batch)
        if not results:  # partial files, pins: nothing to tell, so the loop is not woken
            return not stopping
        try:
            self._loop.call_soon_threadsafe(self._on_done, results)
        except RuntimeError:  # the loop is closed: the effects ran all the same
            log.debug("%s: %d effects done after the loop closed", self._thread.name, len(results))
        return not stopping

    def close(self, timeout: float = 30.0) -> None:
        """Finish the effects already submitted, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)


class DiskWorker(EffectThread[DiskEffect, DiskResult]):
    """Run the agent's changes to its cache (chunk writes, manifests, pins) in a thread,
    in order; report each batch's results to ``on_written``."""

    def __init__(
        self,
        store: ManagedStore,
        loop: asyncio.AbstractEventLoop,
        on_written: Callable[[list[DiskResult]], None],
    ) -> None:
        super().__init__(
            lambda effects: perform_disk_effects(store, effects), loop, on_written, "shoal-disk"
        )


class ReadWorker(EffectThread[ReadChunk, ChunkRead]):
    """Run ``ReadChunk`` effects in a thread; report each batch to ``on_read``."""

    def __init__(
        self,
        store: ChunkSource,
        loop: asyncio.AbstractEventLoop,
        on_read: Callable[[list[ChunkRead]], None],
    ) -> None:
        super().__init__(lambda reads: perform_reads(store, reads), loop, on_read, "shoal-read")
