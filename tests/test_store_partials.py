"""Partial files: the received prefix of a chunk in flight, kept on disk (issue 9)."""

from __future__ import annotations

from pathlib import Path

from shoal.store.content_store import ContentStore
from store_packages import CHUNK, make_package


def part_files(root: Path) -> list[str]:
    return sorted(path.name for path in root.glob("*.part"))


def test_a_prefix_written_step_by_step_is_read_back_after_a_reopen(tmp_path: Path) -> None:
    data, manifest, manifest_file = make_package(4 * CHUNK)
    content_id = manifest.content_id
    store = ContentStore(tmp_path, durable=False)
    store.add(manifest_file, pinned=True)
    assert store.write_partial(content_id, 2, 0, data[2 * CHUNK : 2 * CHUNK + 1400])
    assert store.write_partial(content_id, 2, 1400, data[2 * CHUNK + 1400 : 2 * CHUNK + 5000])
    store.close()  # (a killed process loses no written page: the file is as written)
    reopened = ContentStore(tmp_path, durable=False)
    assert reopened.read_partials(content_id) == {2: data[2 * CHUNK : 2 * CHUNK + 5000]}


def test_the_chunk_s_write_and_the_content_s_removal_remove_its_partial_file(
    tmp_path: Path,
) -> None:
    data, manifest, manifest_file = make_package(4 * CHUNK)
    content_id = manifest.content_id
    store = ContentStore(tmp_path, durable=False)
    store.add(manifest_file, pinned=True)
    for index in (0, 1, 3):
        assert store.write_partial(content_id, index, 0, data[index * CHUNK : index * CHUNK + 100])
    store.write_verified_chunks(content_id, [(1, data[CHUNK : 2 * CHUNK])])
    assert part_files(tmp_path) == [f"{content_id.hex}.0.part", f"{content_id.hex}.3.part"]
    assert set(store.read_partials(content_id)) == {0, 3}
    # A verified chunk's prefix is never written again (a late write of a chunk held).
    assert not store.write_partial(content_id, 1, 0, b"x" * 100)
    store.drop_partial(content_id, 3)  # the chunk failed: its bytes may be the bad ones
    assert part_files(tmp_path) == [f"{content_id.hex}.0.part"]
    store.remove(content_id)
    assert part_files(tmp_path) == []
    assert store.partials.held_bytes == 0


def test_partial_files_are_bounded_grow_from_their_end_and_stay_under_a_chunk(
    tmp_path: Path,
) -> None:
    data, manifest, manifest_file = make_package(8 * CHUNK)
    content_id = manifest.content_id
    store = ContentStore(tmp_path, durable=False)
    store.add(manifest_file, pinned=True)
    store.partials.max_bytes = 3 * CHUNK
    # A hole (past the file's end) and a whole chunk are refused: neither is a prefix.
    assert not store.write_partial(content_id, 0, 10, b"x" * 10)
    assert not store.write_partial(content_id, 0, 0, data[:CHUNK])
    assert not store.write_partial(content_id, 99, 0, b"x")  # no such chunk
    written = [
        store.write_partial(content_id, index, 0, data[index * CHUNK : index * CHUNK + CHUNK - 1])
        for index in range(5)
    ]
    assert written == [True, True, True, False, False]  # the cap: 3 chunks' worth
    assert store.partials.held_bytes <= 3 * CHUNK
    assert sum(path.stat().st_size for path in tmp_path.glob("*.part")) <= 3 * CHUNK


def test_a_reopen_removes_what_no_chunk_in_flight_can_use(tmp_path: Path) -> None:
    data, manifest, manifest_file = make_package(4 * CHUNK)
    content_id = manifest.content_id
    store = ContentStore(tmp_path, durable=False)
    store.add(manifest_file, pinned=True)
    store.write_partial(content_id, 0, 0, data[:3000])
    store.write_partial(content_id, 1, 0, data[CHUNK : CHUNK + 3000])
    store.write_verified_chunks(content_id, [(1, data[CHUNK : 2 * CHUNK])])
    store.close()
    # What a crash, an old version or a hand can leave behind:
    (tmp_path / f"{content_id.hex}.1.part").write_bytes(b"y" * 100)  # chunk since verified
    (tmp_path / f"{content_id.hex}.2.part").write_bytes(b"y" * CHUNK)  # a whole chunk
    (tmp_path / f"{content_id.hex}.9.part").write_bytes(b"y")  # no such chunk
    (tmp_path / f"{'ab' * 32}.0.part").write_bytes(b"y")  # content not in the store
    (tmp_path / "junk.part").write_bytes(b"y")
    (tmp_path / f"{content_id.hex}.3.part").write_bytes(b"")  # empty
    reopened = ContentStore(tmp_path, durable=False)
    assert part_files(tmp_path) == [f"{content_id.hex}.0.part"]
    assert reopened.read_partials(content_id) == {0: data[:3000]}
