"""Upgrades through the swarm, as real processes in network namespaces (issue 12.5).

An office of clients installed as the Debian package lays them out, each under a
supervisor doing what systemd's ``Restart=on-failure`` does, moves from 0.1.1 to 0.2.0:
the console refuses the release while the P2P server is older, accepts it once the
server is upgraded, and the release crosses the office's WAN link once. Needs root;
every namespace, link and process is removed at the end, also when it fails.
``benchmarks/upgrade_swarm.py`` runs it with 8 clients and prints the figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_site import one_office_site
from shoal_dev.lab.deployment import Deployment
from shoal_dev.lab.netns import lab_available
from shoal_dev.lab.network import EmulatedNetwork, LabOffice
from shoal_dev.lab.upgrade import run_upgrade

PREFIX = os.environ.get("SHOAL_UPGRADE_PREFIX", "upg-")
BASE = "10.218"  # not the lab's default: other labs may run beside this one
CLIENTS = int(os.environ.get("SHOAL_UPGRADE_CLIENTS", "4"))

available, why = lab_available()
pytestmark = [pytest.mark.skipif(not available, reason=why), pytest.mark.slow, pytest.mark.serial]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Deployment, EmulatedNetwork]]:
    branch = LabOffice("branch", 1, CLIENTS, wan_mbit=20, base=BASE)
    with one_office_site(PREFIX, BASE, branch, tmp_path, seats=50, segment_wan=True) as running:
        yield running


def test_clients_move_to_the_release_which_crosses_the_wan_once(
    site: tuple[Deployment, EmulatedNetwork], tmp_path: Path
) -> None:
    deployment, network = site
    hosts = network.office_hosts("branch")
    result = run_upgrade(deployment, network, hosts, tmp_path / "upgrade", say=lambda _l: None)
    assert "upgrade p2p-server (0.1.0) to 0.2.0 or later first" in result.refusal
    assert result.versions == dict.fromkeys(result.versions, "0.2.0")
    assert len(result.versions) == CLIENTS
    assert result.on_disk == dict.fromkeys(result.on_disk, "0.2.0")  # the copy was replaced
    assert result.restarts == dict.fromkeys(result.restarts, 1)  # exit 75, started again
    assert result.install_states == dict.fromkeys(result.install_states, "installed")
    # Once, not once per client: the control traffic of the upgrade (new registrations,
    # check-ins) rides on top, so allow a fraction of the release.
    print(result.summary())
    assert result.wan_ratio < 1.5, result.summary()
    assert result.wan_ratio_net < 1.15, result.summary()
