"""A lossy office in the simulator (``loss_pct``): random loss on every link of it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from shoal.wire import Retry, decode_datagram
from shoal.wire.errors import MalformedDatagram
from shoal_dev.sim.enterprise import SERVER_IP, build_enterprise
from shoal_dev.sim.network import SimNetwork
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


def test_a_device_whose_servers_first_answers_are_lost_starts_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The P2P server's first two RETRYs to a device are lost (a lossy link): its blob
    requests (the assignment document, the manifest) were held to the limit for peers
    that never answered, 2 per 10 s, and the device began its download after 5 s. The
    server's address is the device's own, pinned at enrollment: asked again at once."""
    spec = office_spec(parse_grid("[base]\nclients = 2\n", "g.toml").cells[0])
    enterprise = build_enterprise(tmp_path, [spec], package_size=1 << 20, chunk_size=1 << 16)
    victim = enterprise.clients[0].host.ip
    route = SimNetwork._route
    dropped = []

    def lossy_route(network: SimNetwork, sender: Any, port: int, data: bytes, to: Any) -> None:
        if sender.ip == SERVER_IP and to[0] == victim and len(dropped) < 2:
            try:
                retry = isinstance(decode_datagram(data), Retry)
            except MalformedDatagram:
                retry = False
            if retry:
                dropped.append(network.now)
                return
        route(network, sender, port, data, to)

    monkeypatch.setattr(SimNetwork, "_route", lossy_route)
    enterprise.run(until=60, stop=enterprise.all_complete)
    assert enterprise.all_complete() and len(dropped) == 2
    download = enterprise.download_of(enterprise.clients[0])
    assert download.started_at < 1.5
