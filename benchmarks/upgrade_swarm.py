"""Issue 12.5: 8 clients move from one client release to the next through the swarm;
prints how many bytes crossed the office's WAN link per byte of the release (F).

The scenario is ``shoal_dev.lab.run_upgrade`` (also ``tests/test_upgrade_netns.py``,
with 4 clients): each client an installed copy (the Debian package's layout) under a
supervisor that restarts it as systemd's ``Restart=on-failure`` does; the console
refuses the release until the P2P server is upgraded; then every client fetches the
release from its peers, installs it with its signed install action, exits 75, is
started again at the new version and reports it. Run as root (network namespaces):

    .venv/bin/python benchmarks/upgrade_swarm.py [--clients 8] [--wan-mbit 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from shoal_dev.lab.deployment import Deployment, NamespacePlacement, OfficeSetup
from shoal_dev.lab.network import EmulatedNetwork, LabOffice
from shoal_dev.lab.upgrade import run_upgrade

PREFIX = "upgb-"
BASE = "10.219"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--wan-mbit", type=float, default=20)
    options = parser.parse_args()
    office = LabOffice("branch", 1, options.clients, wan_mbit=options.wan_mbit, base=BASE)
    network = EmulatedNetwork.create(PREFIX, [office], segment_wan=True, base=BASE)
    with tempfile.TemporaryDirectory(prefix="shoal-upgrade-") as work:
        deployment = Deployment(
            NamespacePlacement(network),
            Path(work) / "site",
            [OfficeSetup("branch", office.subnet, "Default")],
            f"{BASE}.0.0/24",
            say=lambda _line: None,
        )
        try:
            deployment.start_console()
            deployment.configure(seats=50)
            deployment.start_server()
            deployment.wait_for_server()
            result = run_upgrade(
                deployment, network, network.office_hosts("branch"), Path(work) / "upgrade"
            )
        finally:
            deployment.close()
    upgraded = sum(version == result.new for version in result.versions.values())
    print(json.dumps(result.summary(), indent=1))
    print(
        f"{upgraded}/{result.clients} clients {result.old} -> {result.new} in "
        f"{result.seconds:.1f} s; release {result.release_bytes} bytes; WAN into the office "
        f"{result.wan_bytes} IP bytes = {result.wan_ratio:.3f} F "
        f"({result.wan_ratio_net:.3f} F without the control traffic of "
        f"{result.baseline_bytes_per_second:.0f} B/s measured before); restarts "
        f"{sorted(result.restarts.values())}"
    )
    return 0 if upgraded == result.clients and result.wan_ratio_net < 1.15 else 1


if __name__ == "__main__":
    raise SystemExit(main())
