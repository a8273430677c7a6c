"""The simulator's slow client disk (``shoal_dev.sim.disk``): writes answered after the
disk's time, in batches, and lost with a killed process; grid cells that set it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shoal_dev.sim.disk import DiskShell
from shoal_dev.sim.enterprise import SimOffice, build_enterprise
from shoal_dev.sweep import GridInvalid, parse_grid

MIB = 1024 * 1024
DISK_S = 0.05


def test_each_chunk_is_held_only_a_disk_batch_after_it_was_verified(tmp_path: Path) -> None:
    office = SimOffice("Branch", "10.1.0.0/24", 3, wan_rate=12.5e6, disk_seconds=DISK_S)
    enterprise = build_enterprise(tmp_path, [office], package_size=MIB)
    content_id = enterprise.content_id
    verified: dict[tuple[int, int], float] = {}
    written: dict[tuple[int, int], float] = {}

    def watch() -> bool:
        now = enterprise.network.now
        for number, client in enumerate(enterprise.clients):
            download = enterprise.download_of(client)
            if download is None or download.picker is None:
                continue
            for index in download.picker.have:
                verified.setdefault((number, index), now)
            for index in client.store.verified(content_id):
                written.setdefault((number, index), now)
        return enterprise.all_complete()

    enterprise.run(until=60, stop=watch)
    assert enterprise.all_complete()
    chunks = enterprise.manifest.chunk_count
    assert len(written) == 3 * chunks
    # Every chunk waited for the disk at least one batch's time (from its verification:
    # a batch that started earlier answers the chunks queued after it later still).
    waits = [written[key] - verified[key] for key in written]
    assert min(waits) >= DISK_S - 1e-9
    shells = [client.host.application for client in enterprise.clients]
    assert all(isinstance(shell, DiskShell) for shell in shells)
    # The writer takes what queued meanwhile as one batch, as the client's thread does.
    assert all(0 < shell.batches < chunks for shell in shells)
    expected = hashlib.sha256(enterprise.package).hexdigest()
    for client in enterprise.clients:
        data = client.store.data_path(content_id).read_bytes()
        assert hashlib.sha256(data).hexdigest() == expected


def test_a_killed_process_loses_its_unanswered_writes_and_its_restart_completes(
    tmp_path: Path,
) -> None:
    office = SimOffice("Branch", "10.1.0.0/24", 3, wan_rate=12.5e6, disk_seconds=DISK_S)
    enterprise = build_enterprise(tmp_path, [office], package_size=MIB)
    victim = enterprise.clients[0]

    def mid_download() -> bool:
        current = enterprise.download_of(victim)
        return current is not None and current.picker is not None and len(current.picker.have) >= 4

    enterprise.run(until=60, stop=mid_download)
    current = enterprise.download_of(victim)
    assert current is not None and current.picker is not None
    have = set(current.picker.have)
    enterprise.network.kill(victim.host)
    enterprise.network.run(until=enterprise.network.now + 2 * DISK_S)
    # Nothing the dead process had queued reached its cache after it died.
    stored = set(victim.store.verified(enterprise.content_id))
    assert stored < have
    enterprise.restart(victim)
    assert isinstance(victim.host.application, DiskShell)
    enterprise.run(until=120, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    data = victim.store.data_path(enterprise.content_id).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(enterprise.package).hexdigest()


def test_a_grid_cell_sets_the_disk_time_and_the_lab_has_none() -> None:
    grid = parse_grid("[base]\nclients = 4\n[axes]\ndisk_ms = [10]\n", "g.toml")
    assert [(cell.axis, cell.disk_ms) for cell in grid.cells] == [("base", 0.0), ("disk_ms", 10.0)]
    assert grid.cells[1].name.endswith("disk10ms")
    assert grid.sim_only_fields() == ["disk_ms"]
    with pytest.raises(GridInvalid, match="disk_ms"):
        parse_grid("[base]\ndisk_ms = -1\n", "g.toml")
