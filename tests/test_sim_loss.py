"""A lossy office in the simulator (``loss_pct``): random loss on every link of it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shoal_dev.sim.enterprise import build_enterprise
from shoal_dev.sim.sweep import office_spec
from shoal_dev.sweep import GridInvalid, parse_grid


def test_a_grid_cell_sets_random_loss_on_its_office_and_the_lab_has_none() -> None:
    grid = parse_grid("[base]\nclients = 4\n[axes]\nloss_pct = [2]\n", "g.toml")
    assert [(cell.axis, cell.loss_pct) for cell in grid.cells] == [("base", 0.0), ("loss_pct", 2.0)]
    assert grid.cells[1].name.endswith("loss2%")
    assert grid.sim_only_fields() == ["loss_pct"]
    assert office_spec(grid.cells[1]).loss == 0.02 and office_spec(grid.cells[0]).loss == 0.0
    with pytest.raises(GridInvalid, match="loss_pct"):
        parse_grid("[base]\nloss_pct = 60\n", "g.toml")


def test_every_device_of_a_lossy_office_gets_the_package_intact(tmp_path: Path) -> None:
    """2% of datagrams lost on each of the office's links (a datagram between two
    clients crosses two, one from the server four): what reaches a device is still the
    package, and the losses happened."""
    spec = office_spec(parse_grid("[base]\nclients = 4\nloss_pct = 2\n", "g.toml").cells[0])
    enterprise = build_enterprise(tmp_path, [spec], package_size=1 << 20, chunk_size=1 << 16)
    office = enterprise.network.offices[spec.name]
    links = [office.wan_up, office.wan_down]
    links += [link for host in office.hosts.values() for link in (host.up, host.down)]
    assert {link.loss for link in links} == {0.02}
    enterprise.run(until=60, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    for client in enterprise.clients:
        data = client.store.data_path(enterprise.content_id).read_bytes()
        assert hashlib.sha256(data).digest() == hashlib.sha256(enterprise.package).digest()
    assert sum(link.datagrams_dropped for link in links) > 0
