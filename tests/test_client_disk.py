"""The client's disk writes as effects: held only once written, hashed once, off the loop."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import shoal.core.manifest
import shoal.protocol.transfer.receiver
import shoal.store.content_store
import shoal.store.disk
from shoal.client.disk import (
    ChunkWritten,
    ReadChunk,
    WriteChunk,
    WritePartial,
    perform_disk_effects,
    perform_reads,
    perform_writes,
)
from shoal.client.disk_worker import DiskWorker, EffectThread
from shoal.client.service import _AgentShell
from shoal.core.ids import ContentId
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey
from shoal.store.content_store import ContentStore
from shoal.store.errors import StoreDiskFull
from shoal_dev.sim.enterprise import SimClient, SimOffice, build_enterprise

MIB = 1024 * 1024
_SHA256 = hashlib.sha256
CHUNK = 65536


def _held_by_peers(enterprise: Any, client: SimClient) -> bool:
    """Has any other client fetched a byte from ``client``?"""
    return any(
        client.host.ip in enterprise.download_of(other).peers_used
        for other in enterprise.clients
        if other is not client and enterprise.download_of(other) is not None
    )


def test_a_chunk_is_announced_and_served_at_once_but_reported_only_after_its_write(
    tmp_path: Path,
) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 3)], package_size=2 * MIB
    )
    slow = enterprise.clients[0]
    backlog = 4 * CHUNK
    slow.agent.config = dataclasses.replace(slow.agent.config, write_backlog_bytes=backlog)
    # Once its manifest is in the cache, its writes wait until this test performs them.
    enterprise.run(until=20, stop=lambda: _transferring(enterprise, slow))
    slow.agent.disk_inline = False
    enterprise.run(until=20)
    download = enterprise.download_of(slow)
    assert download is not None and download.picker is not None
    received = download.picker.have
    assert len(received) > 0  # chunks arrived and were verified...
    content_id = enterprise.content_id
    assert len(slow.store.verified(content_id)) == 0  # ...but none is written yet:
    # not done for the device, its status or its server...
    assert slow.agent.status(enterprise.network.now)["downloads"][0]["chunks_done"] == 0
    server_view = enterprise.server.core.clients[slow.agent.config.device_id]
    assert all(progress.chunks_done == 0 for progress in server_view.content.values())
    # ...yet its office heard of every one and was served them from memory: a relay hop
    # does not wait for this client's disk, and nothing was read back from it.
    assert _announced(slow, content_id) == received
    assert slow.agent.counters.chunks_served > 0
    assert _held_by_peers(enterprise, slow)
    assert not slow.agent.take_disk_reads()
    # Back-pressure: with the disk this far behind, no new chunk is asked for.
    pending = slow.agent.take_disk_writes()
    waiting = sum(len(write.data) for write in pending)
    in_flight = slow.agent.config.max_in_flight * CHUNK
    assert backlog <= waiting <= backlog + in_flight
    assert len(received) == len(pending)
    assert not download.requests
    # The writes complete: now the chunks count, and the download goes on.
    now = enterprise.network.now
    for written in perform_writes(slow.store, pending):
        assert not written.error
        slow.agent.chunk_written(written, now)
    assert slow.store.verified(content_id) == received
    assert slow.agent.status(now)["downloads"][0]["chunks_done"] == len(received)
    slow.agent.disk_inline = True
    enterprise.network.pump(slow.host)
    enterprise.run(until=120, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    expected = hashlib.sha256(enterprise.package).hexdigest()
    assert hashlib.sha256(slow.store.data_path(content_id).read_bytes()).hexdigest() == expected


def test_a_chunk_whose_write_failed_is_no_longer_announced_or_served(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 3)], package_size=2 * MIB
    )
    client = enterprise.clients[0]
    enterprise.run(until=20, stop=lambda: _transferring(enterprise, client))
    client.agent.disk_inline = False
    content_id = enterprise.content_id
    download = enterprise.download_of(client)
    assert download is not None and download.picker is not None
    enterprise.run(until=20, stop=lambda: len(download.picker.have) >= 2)  # type: ignore[union-attr]
    writes = client.agent.take_disk_writes()
    failed, kept = writes[0], writes[1:]
    assert failed.chunk_index in _announced(client, content_id)
    now = enterprise.network.now
    client.agent.chunk_written(ChunkWritten(failed, False, "disk full (test)"), now)
    for written in perform_writes(client.store, kept):
        client.agent.chunk_written(written, now)
    # The office no longer hears of it, nobody is served it from memory, and it is
    # wanted again; what was written stays announced.
    assert failed.chunk_index not in _announced(client, content_id)
    assert all(write.chunk_index in _announced(client, content_id) for write in kept)
    assert client.agent.downloader.writes.pending(content_id, failed.chunk_index) is None
    assert failed.chunk_index not in download.picker.have
    assert client.agent.counters.store_errors == 1
    client.agent.disk_inline = True
    enterprise.network.pump(client.host)
    enterprise.run(until=120, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    data = client.store.data_path(content_id).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(enterprise.package).hexdigest()


def _transferring(enterprise: Any, client: SimClient) -> bool:
    download = enterprise.download_of(client)
    return download is not None and download.transferring


def _announced(client: SimClient, content_id: ContentId) -> Any:
    """The chunks ``client``'s discovery machine tells peers it holds."""
    holding = client.agent.discovery._holdings.get(content_id)
    return holding.chunks if holding is not None else ()


class _CountingSha256:
    """``shoal.core.digest``'s ``sha256`` and ``Sha256`` that count, per digest, how
    often each was computed."""

    def __init__(self) -> None:
        self.digests: Counter[bytes] = Counter()

    def sha256(self, data: Any) -> bytes:
        result = _SHA256(data).digest()
        self.digests[result] += 1
        return result

    def incremental(self) -> Any:
        counter = self

        class _Hash:
            def __init__(self) -> None:
                self._inner = _SHA256()

            def update(self, more: Any) -> None:
                self._inner.update(more)

            def digest(self) -> bytes:
                result = self._inner.digest()
                counter.digests[result] += 1
                return result

        return _Hash()


def test_a_received_chunk_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Remote", "10.3.0.0/24", 1, type="VPN")], package_size=1 * MIB
    )
    counting = _CountingSha256()
    # Where chunks and files are hashed: on receipt, when checked, when stored.
    for module in (
        shoal.protocol.transfer.receiver,
        shoal.core.manifest,
        shoal.store.content_store,
        shoal.store.disk,
    ):
        for name, counted in (("sha256", counting.sha256), ("Sha256", counting.incremental)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted)
    served = Counter[int]()
    origin_read = enterprise.server.origin.read_chunk

    def counted_read(content_id: ContentId, chunk_index: int) -> bytes:
        served[chunk_index] += 1
        return origin_read(content_id, chunk_index)

    monkeypatch.setattr(enterprise.server.origin, "read_chunk", counted_read)
    enterprise.run(until=60, stop=enterprise.all_complete)
    monkeypatch.undo()
    assert enterprise.all_complete()
    manifest = enterprise.manifest
    for chunk_index, chunk_hash in enumerate(manifest.chunk_hashes):
        # Once by the server, reading it for the peer (bit rot is not served), and once
        # by the client, on receipt: not again when written, nor at completion.
        assert served[chunk_index] >= 1
        assert counting.digests[chunk_hash] == served[chunk_index] + 1, chunk_index
    assert counting.digests[manifest.sha256] == 0  # the whole file is not hashed again


class _SlowStore:
    """A store whose writes take ``delay`` seconds each (a slow or busy disk)."""

    def __init__(self, inner: ContentStore, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.threads: set[int] = set()

    def write_verified_chunks(
        self, content_id: ContentId, chunks: Sequence[tuple[int, bytes]]
    ) -> bool:
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        return self.inner.write_verified_chunks(content_id, chunks)


def _store_with_package(tmp_path: Path, chunks: int) -> tuple[ContentStore, bytes, Any]:
    package = bytes(range(256)) * (chunks * CHUNK // 256)
    manifest = pack_bytes(package, CHUNK)
    store = ContentStore(tmp_path, durable=True)
    store.add(SigningKey.generate().sign(manifest).encode(), pinned=True)
    return store, package, manifest


@pytest.mark.serial  # the event loop's lag in seconds
def test_the_shell_writes_off_the_event_loop_which_keeps_running(tmp_path: Path) -> None:
    store, package, manifest = _store_with_package(tmp_path, 6)
    slow = _SlowStore(store, delay=0.25)
    writes = [
        WriteChunk(
            manifest.content_id, index, package[index * CHUNK : (index + 1) * CHUNK], ("p", 1)
        )
        for index in range(manifest.chunk_count)
    ]

    async def scenario() -> tuple[list[ChunkWritten], float, set[int], int]:
        loop = asyncio.get_running_loop()
        answered: list[ChunkWritten] = []
        answer_threads: set[int] = set()
        done = asyncio.Event()

        def on_written(results: list[ChunkWritten]) -> None:
            answer_threads.add(threading.get_ident())
            answered.extend(results)
            if len(answered) == len(writes):
                done.set()

        worker = DiskWorker(slow, loop, on_written)
        for write in writes[:2]:
            worker.submit([write])
        while not slow.threads:  # the first batch is on the disk...
            await asyncio.sleep(0.001)
        worker.submit(writes[2:])  # ...and these are queued meanwhile
        # Meanwhile the loop keeps running: ticks every 10 ms, late by how much?
        worst_lag, ticks = 0.0, 0
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.01)
            worst_lag = max(worst_lag, loop.time() - before - 0.01)
            ticks += 1
        worker.close()
        return answered, worst_lag, answer_threads, ticks

    answered, worst_lag, answer_threads, ticks = asyncio.run(scenario())
    assert [written.write.chunk_index for written in answered] == list(range(len(writes)))
    assert all(not written.error for written in answered)
    assert answered[-1].complete
    assert threading.get_ident() not in slow.threads  # the writes ran in the worker...
    assert answer_threads == {threading.get_ident()}  # ...and were answered on the loop
    assert ticks >= 20  # >= 0.5 s of writes: the loop ran all along
    assert worst_lag < 0.2  # never blocked for a write (0.25 s each)
    # Batched: the writes queued during the first batch went to the disk together.
    assert len(slow.threads) == 1
    assert store.info(manifest.content_id).complete
    assert store.data_path(manifest.content_id).read_bytes() == package


class _NoInstaller:
    """The shell's install runner, for sites whose packages carry no install spec."""

    def submit(self, commands: list[object]) -> None:
        raise AssertionError(f"nothing to install here, got {commands}")


def test_the_shell_hands_the_agent_s_writes_to_the_worker(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Remote", "10.3.0.0/24", 1, type="VPN")], package_size=1 * MIB
    )
    client = enterprise.clients[0]
    client.agent.disk_inline = False
    client.agent.downloader.prefixes.step_segments = 1  # a prefix written at every poll
    submitted: list[WriteChunk] = []
    updates: list[Any] = []

    class _Worker:
        def submit(self, effects: list[Any]) -> None:
            # Manifests and pins are done at once (the download must start); chunk
            # writes are kept, unanswered.
            for effect in effects:
                if isinstance(effect, WriteChunk):
                    submitted.append(effect)
                else:
                    updates.append(effect)
                    for result in perform_disk_effects(client.store, [effect]):  # type: ignore[arg-type]
                        client.agent.disk_done(result, enterprise.network.now)

    class _Reader:
        def submit(self, reads: list[ReadChunk]) -> None:
            raise AssertionError("a client of a VPN office serves nobody")

    shell = _AgentShell(client.agent, _Worker(), _Reader(), _NoInstaller(), lambda: None)  # type: ignore[arg-type]
    client.host.application = shell
    enterprise.run(until=10)
    assert submitted
    assert len(client.store.verified(enterprise.content_id)) == 0  # the agent wrote nothing
    assert client.agent.take_disk_writes() == []  # every write went to the worker
    # So did the manifest (written and fsynced by the store): not added on the loop; so
    # did the partial files' load and the prefixes of the chunks in flight.
    names = [type(update).__name__ for update in updates]
    assert names[:2] == ["AddManifest", "LoadPartials"]
    assert set(names[2:]) == {"WritePartial"}


def test_the_shell_reads_served_chunks_through_the_reader(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 2)], package_size=1 * MIB
    )
    # The first client to complete holds what the other still misses, and only it does:
    # the office gets one WAN copy (which client it is depends on the swarm's rules, not
    # on its place in the office; with more clients the others may have the rest).
    enterprise.run(until=60, stop=lambda: any(enterprise.complete(c) for c in enterprise.clients))
    holder = next(c for c in enterprise.clients if enterprise.complete(c))
    assert not enterprise.all_complete()
    holder.agent.disk_inline = False
    reads: list[ReadChunk] = []

    class _Writer:
        def submit(self, effects: list[Any]) -> None:
            for result in perform_disk_effects(holder.store, effects):  # type: ignore[arg-type]
                holder.agent.disk_done(result, enterprise.network.now)

    class _Reader:
        def submit(self, submitted: list[ReadChunk]) -> None:
            reads.extend(submitted)

    holder.host.application = _AgentShell(  # type: ignore[arg-type]
        holder.agent, _Writer(), _Reader(), _NoInstaller(), lambda: None
    )
    served = holder.agent.counters.bytes_served
    enterprise.run(until=enterprise.network.now + 0.5)
    assert reads  # peers asked the holder, and the reads went to the reader...
    assert holder.agent.counters.bytes_served == served  # ...nothing read on the loop
    now = enterprise.network.now
    for result in perform_reads(holder.store, reads):  # type: ignore[arg-type]
        assert result.data is not None  # held, and re-hashed by the store
        holder.agent.chunk_read(result, now)
    assert holder.agent.counters.bytes_served > served  # answered: sent
    holder.agent.disk_inline = True
    enterprise.network.pump(holder.host)
    enterprise.run(until=120, stop=enterprise.all_complete)
    assert enterprise.all_complete()


def test_an_uploader_serving_many_peers_holds_at_most_its_budget(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 8)], package_size=2 * MIB
    )
    budget = 3 * CHUNK
    for client in enterprise.clients:
        client.agent.config = dataclasses.replace(client.agent.config, upload_budget_bytes=budget)
        client.agent.uploads.max_bytes = budget
    peaks = dict.fromkeys(range(len(enterprise.clients)), 0)
    waited = [0]

    def sample() -> bool:
        for number, client in enumerate(enterprise.clients):
            peaks[number] = max(peaks[number], client.agent.uploads.bytes_active)
            waited[0] = max(waited[0], client.agent.uploads.waiting)
        return enterprise.all_complete()

    enterprise.run(until=120, stop=sample)
    assert enterprise.all_complete()
    assert max(peaks.values()) == budget  # the budget was reached, never passed
    assert waited[0] > 0  # and requests did wait for it
    expected = hashlib.sha256(enterprise.package).hexdigest()
    for client in enterprise.clients:
        data = client.store.data_path(enterprise.content_id).read_bytes()  # type: ignore[attr-defined]
        assert hashlib.sha256(data).hexdigest() == expected


class _FailingOnceStore(ContentStore):
    """A store whose first batch of writes finds the disk full."""

    failures = 0

    def write_verified_chunks(
        self, content_id: ContentId, chunks: Sequence[tuple[int, bytes | bytearray | memoryview]]
    ) -> bool:
        if not self.failures:
            self.failures += 1
            raise StoreDiskFull("disk full (test)")
        return super().write_verified_chunks(content_id, chunks)


def test_a_failed_write_is_not_held_and_the_chunk_is_fetched_again(tmp_path: Path) -> None:
    enterprise = build_enterprise(
        tmp_path,
        [SimOffice("Remote", "10.3.0.0/24", 1, type="VPN")],
        package_size=1 * MIB,
        store_factory=lambda directory, _number: _FailingOnceStore(directory, durable=False),
    )
    enterprise.run(until=60, stop=enterprise.all_complete)
    client = enterprise.clients[0]
    assert enterprise.all_complete()
    assert client.agent.counters.store_errors >= 1
    download = enterprise.download_of(client)
    # What failed to be written was received again: more bytes than the package.
    assert download.bytes_from_server > enterprise.manifest.size
    data = client.store.data_path(enterprise.content_id).read_bytes()  # type: ignore[attr-defined]
    assert data == enterprise.package


def test_an_idle_worker_keeps_nothing_of_its_last_batch() -> None:
    """A worker waiting for effects holds no reference to the last batch: its chunks
    (1 MiB each) are freed, not kept by an idle client for as long as it idles."""

    class Effect:  # stands for a WriteChunk or a ReadChunk (bytes cannot be weakly held)
        pass

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        answered = asyncio.Event()
        worker = EffectThread[Effect, int](
            lambda batch: [len(batch)], loop, lambda _results: answered.set(), "test"
        )
        effect = Effect()
        alive = weakref.ref(effect)
        worker.submit([effect])
        del effect
        await answered.wait()
        deadline = loop.time() + 2.0
        while alive() is not None and loop.time() < deadline:
            await asyncio.sleep(0.01)  # until the thread waits for the next batch
        freed = alive() is None
        worker.close()
        return freed

    assert asyncio.run(scenario())


def test_effects_submitted_while_the_worker_is_busy_run_as_one_batch_in_order() -> None:
    """What is submitted while a batch runs (several calls, several effects each) is the
    next batch, in submission order: one wake-up of the thread, not one per effect."""
    release = threading.Event()
    batches: list[list[int]] = []

    def perform(batch: Sequence[int]) -> list[int]:
        if not batches:
            release.wait(5.0)  # the first batch is slow: the rest queues meanwhile
        batches.append(list(batch))
        return list(batch)

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        results: list[int] = []
        done = asyncio.Event()

        def on_done(batch: list[int]) -> None:
            results.extend(batch)
            if len(results) == 6:
                done.set()

        worker = EffectThread[int, int](perform, loop, on_done, "test")
        worker.submit([1])
        worker.submit([2, 3])
        worker.submit([])
        worker.submit([4, 5, 6])
        release.set()
        await asyncio.wait_for(done.wait(), 5.0)
        worker.close()
        return results

    assert asyncio.run(scenario()) == [1, 2, 3, 4, 5, 6]
    assert batches in ([[1], [2, 3, 4, 5, 6]], [[1, 2, 3, 4, 5, 6]])


def test_a_batch_with_nothing_to_tell_does_not_wake_the_loop(tmp_path: Path) -> None:
    """Partial files written (issue 9: as often as a chunk's prefix grows) answer
    nothing: such a batch calls nobody back, so it costs the event loop no wake-up and
    the agent no poll; a chunk's write still answers."""
    store, package, manifest = _store_with_package(tmp_path, 2)
    content_id = manifest.content_id
    prefix = WritePartial(content_id, 0, 0, package[:5000])

    async def scenario() -> list[list[object]]:
        loop = asyncio.get_running_loop()
        calls: list[list[object]] = []
        written = asyncio.Event()

        def on_written(results: list[Any]) -> None:
            calls.append(list(results))
            written.set()

        worker = DiskWorker(store, loop, on_written)
        worker.submit([prefix])
        while store.partials.size(content_id, 0) < 5000:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # a call back, had there been one, came by now
        assert calls == []
        worker.submit([WriteChunk(content_id, 0, package[:CHUNK], ("p", 1))])
        await asyncio.wait_for(written.wait(), 5.0)
        worker.close()
        return calls

    (only,) = asyncio.run(scenario())
    assert [type(result) for result in only] == [ChunkWritten]
    assert store.partials.size(content_id, 0) == 0  # the chunk's write removed the file
