"""The local content store: verification, persistence, eviction, concurrency, disk full."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.core.errors import ChunkHashMismatch
from shoal.store.content_store import ContentStore
from shoal.store.errors import (
    CacheFull,
    ChunkNotAvailable,
    ContentNotFound,
    SidecarCorrupt,
    StoreDiskFull,
)
from store_packages import CHUNK, make_package


def chunk(data: bytes, index: int) -> bytes:
    return data[index * CHUNK : (index + 1) * CHUNK]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_chunks_in_any_order_complete_to_the_exact_file(tmp_path: Path) -> None:
    data, manifest, manifest_file = make_package(5 * CHUNK + 123)
    store = ContentStore(tmp_path)
    store.add(manifest_file)
    order = list(range(manifest.chunk_count))
    random.Random(7).shuffle(order)
    results = [store.write_chunk(manifest.content_id, index, chunk(data, index)) for index in order]
    assert results == [False] * (len(order) - 1) + [True]
    assert store.data_path(manifest.content_id).read_bytes() == data
    assert store.info(manifest.content_id).complete


def test_the_verified_count_does_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    """The agent's status reads the count on its event loop: a batch being written (the
    store's lock held through pwrite, fdatasync and sidecar) must not stall it."""
    data, manifest, manifest_file = make_package(3 * CHUNK)
    store = ContentStore(tmp_path)
    store.add(manifest_file)
    store.write_chunk(manifest.content_id, 0, chunk(data, 0))
    holding, release = threading.Event(), threading.Event()

    def slow_write() -> None:
        with store._lock:  # what a write batch holds while the disk syncs
            holding.set()
            release.wait(10)

    writer = threading.Thread(target=slow_write)
    writer.start()
    try:
        assert holding.wait(10)
        counted: list[int] = []
        reader = threading.Thread(
            target=lambda: counted.append(store.verified_count(manifest.content_id))
        )
        reader.start()
        reader.join(2)
        assert counted == [1]  # answered while the lock was held
    finally:
        release.set()
        writer.join()


def test_a_bad_chunk_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    _data, manifest, manifest_file = make_package(3 * CHUNK)
    store = ContentStore(tmp_path)
    store.add(manifest_file)
    bad = b"\xff" * CHUNK
    with pytest.raises(ChunkHashMismatch):
        store.write_chunk(manifest.content_id, 1, bad)
    assert 1 not in store.verified(manifest.content_id)
    assert bad not in store.data_path(manifest.content_id).read_bytes()
    with pytest.raises(ChunkNotAvailable):
        store.read_chunk(manifest.content_id, 1)


def test_verified_chunks_survive_reopening(tmp_path: Path) -> None:
    data, manifest, manifest_file = make_package(4 * CHUNK)
    with ContentStore(tmp_path) as store:
        store.add(manifest_file, pinned=True)
        store.write_chunk(manifest.content_id, 2, chunk(data, 2))
    reopened = ContentStore(tmp_path)
    assert set(reopened.verified(manifest.content_id)) == {2}
    assert reopened.info(manifest.content_id).pinned
    assert reopened.read_chunk(manifest.content_id, 2) == chunk(data, 2)
    assert reopened.manifest_bytes(manifest.content_id) == manifest_file


def test_a_zero_byte_package_is_complete_at_once(tmp_path: Path) -> None:
    _, manifest, manifest_file = make_package(0)
    store = ContentStore(tmp_path)
    assert store.add(manifest_file).complete
    assert store.data_path(manifest.content_id).read_bytes() == b""


def test_bit_rot_is_caught_before_serving_and_the_chunk_is_fetched_again(tmp_path: Path) -> None:
    data, manifest, manifest_file = make_package(2 * CHUNK)
    store = ContentStore(tmp_path)
    store.add(manifest_file)
    store.write_chunk(manifest.content_id, 0, chunk(data, 0))
    with open(store.data_path(manifest.content_id), "r+b") as damaged:
        damaged.write(b"\x00\x01\x02")
    with pytest.raises(ChunkHashMismatch):
        store.read_chunk(manifest.content_id, 0)
    assert 0 not in store.verified(manifest.content_id)
    assert 0 not in ContentStore(tmp_path).verified(manifest.content_id)


def test_lru_eviction_never_evicts_pinned_content(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, capacity_bytes=10 * CHUNK, clock=Clock())
    packages = [make_package(4 * CHUNK, seed) for seed in range(4)]
    (_, pinned, pinned_file), (_, old, old_file), (data_recent, recent, recent_file), _ = packages
    store.add(pinned_file, pinned=True)
    store.add(old_file)
    store.add(recent_file)  # 12 chunks > 10: evicts the least recently used unpinned (old)
    assert old.content_id not in store
    store.write_chunk(recent.content_id, 0, chunk(data_recent, 0))
    store.add(packages[3][2])  # needs room again: the only unpinned candidate is `recent`
    assert recent.content_id not in store
    assert pinned.content_id in store
    assert not list(tmp_path.glob(f"{old.content_id.hex}.*"))


def test_cache_full_when_pinned_content_leaves_no_room(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, capacity_bytes=6 * CHUNK)
    store.add(make_package(4 * CHUNK, 1)[2], pinned=True)
    with pytest.raises(CacheFull, match="pinned"):
        store.add(make_package(4 * CHUNK, 2)[2])


def test_readers_see_only_verified_chunks_while_a_download_writes(tmp_path: Path) -> None:
    data, manifest, manifest_file = make_package(64 * CHUNK)
    store = ContentStore(tmp_path, durable=False)
    store.add(manifest_file)
    problems: list[str] = []
    done = threading.Event()

    def serve_peers() -> None:
        served = 0
        while not done.is_set() or served == 0:
            for index in store.verified(manifest.content_id):
                if store.read_chunk(manifest.content_id, index) != chunk(data, index):
                    problems.append(f"chunk {index} served wrong bytes")
                served += 1

    readers = [threading.Thread(target=serve_peers) for _ in range(3)]
    for reader in readers:
        reader.start()
    for index in range(manifest.chunk_count):
        store.write_chunk(manifest.content_id, index, chunk(data, index))
    done.set()
    for reader in readers:
        reader.join()
    assert problems == []
    assert hashlib.sha256(store.data_path(manifest.content_id).read_bytes()).digest() == (
        manifest.sha256
    )


def test_a_corrupt_sidecar_is_named_and_repair_keeps_good_chunks(tmp_path: Path) -> None:
    data, manifest, manifest_file = make_package(3 * CHUNK)
    with ContentStore(tmp_path) as store:
        store.add(manifest_file)
        store.write_chunk(manifest.content_id, 0, chunk(data, 0))
        store.write_chunk(manifest.content_id, 2, chunk(data, 2))
    sidecar = tmp_path / f"{manifest.content_id.hex}.state"
    sidecar.write_text('{"format": 1, "verif')
    with pytest.raises(SidecarCorrupt, match=r"\.state: sidecar is not readable JSON"):
        ContentStore(tmp_path)
    lenient = ContentStore(tmp_path, strict=False)
    assert [problem.content_id for problem in lenient.problems] == [manifest.content_id]
    repaired = lenient.repair(manifest.content_id)
    assert repaired.verified_chunks == 2
    assert set(lenient.verified(manifest.content_id)) == {0, 2}
    assert lenient.problems == []


def test_a_sidecar_claiming_completion_with_missing_chunks_is_corrupt(tmp_path: Path) -> None:
    _, manifest, manifest_file = make_package(2 * CHUNK)
    ContentStore(tmp_path).add(manifest_file)
    sidecar = tmp_path / f"{manifest.content_id.hex}.state"
    state = json.loads(sidecar.read_text())
    state["complete"] = True
    sidecar.write_text(json.dumps(state))
    with pytest.raises(SidecarCorrupt, match="complete with chunks missing"):
        ContentStore(tmp_path)


def test_orphans_of_an_interrupted_add_are_removed(tmp_path: Path) -> None:
    _, manifest, manifest_file = make_package(CHUNK)
    (tmp_path / f"{manifest.content_id.hex}.manifest").write_bytes(manifest_file)
    (tmp_path / f"{manifest.content_id.hex}.data").write_bytes(b"x")
    (tmp_path / ".junk.state.tmp").write_bytes(b"{")
    store = ContentStore(tmp_path)
    assert manifest.content_id not in store
    assert list(tmp_path.iterdir()) == []


def test_unknown_content_is_a_named_error(tmp_path: Path) -> None:
    _, manifest, _ = make_package(CHUNK)
    with pytest.raises(ContentNotFound, match="not in the store"):
        ContentStore(tmp_path).read_chunk(manifest.content_id, 0)


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, so that the disk really fills (needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_is_a_clear_error_and_leaves_the_store_consistent(tiny_filesystem: Path) -> None:
    data, manifest, manifest_file = make_package(4 * CHUNK, seed=3)
    store = ContentStore(tiny_filesystem)
    store.add(manifest_file)
    store.write_chunk(manifest.content_id, 0, chunk(data, 0))
    ballast = tiny_filesystem / "ballast"
    with open(ballast, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\x00" * 4096)
        except OSError:
            pass
    _, big, big_file = make_package(8 * CHUNK, seed=4)
    with pytest.raises(StoreDiskFull, match=r"disk full .* no room for content"):
        store.add(big_file)
    assert big.content_id not in store
    # The preallocated package still takes chunks; the sidecar rewrite fails for lack of room.
    with pytest.raises(StoreDiskFull, match="no room"):
        store.write_chunk(manifest.content_id, 1, chunk(data, 1))
    assert set(store.verified(manifest.content_id)) == {0}
    ballast.unlink()
    reopened = ContentStore(tiny_filesystem)
    assert set(reopened.verified(manifest.content_id)) == {0}
    assert not list(tiny_filesystem.glob(f"{big.content_id.hex}.*"))
    assert reopened.write_chunk(manifest.content_id, 1, chunk(data, 1)) is False


def test_a_reader_waiting_for_a_chunk_wakes_when_it_is_written_not_at_its_timeout(
    tmp_path: Path,
) -> None:
    data, manifest, manifest_file = make_package(2 * CHUNK)
    store = ContentStore(tmp_path, durable=False)
    store.add(manifest_file)
    content_id = manifest.content_id
    assert store.wait_for_chunk(content_id, 1, 0.01) is False
    woken: list[bool] = []
    reader = threading.Thread(target=lambda: woken.append(store.wait_for_chunk(content_id, 1, 60)))
    reader.start()
    store.write_chunk(content_id, 0, chunk(data, 0))  # another chunk: still waiting
    store.write_chunk(content_id, 1, chunk(data, 1))
    reader.join(timeout=10)
    assert woken == [True] and not reader.is_alive()

    gone: list[BaseException] = []

    def wait_for_removed() -> None:
        try:
            store.wait_for_chunk(content_id, 5, 60)
        except ContentNotFound as error:
            gone.append(error)

    store.add(manifest_file)
    reader = threading.Thread(target=wait_for_removed)
    reader.start()
    store.remove(content_id)
    reader.join(timeout=10)
    assert len(gone) == 1 and not reader.is_alive()
