"""An office on slow asymmetric client links (20 Mbit/s up, 100 down), in the simulator.

Issue 9's first row: every client's uplink, not the WAN, bounds the office, so
T_lb1 = (N-1)F/sum_u. The office must still take the package over its WAN about once,
every client must finish with the right bytes, and (the target, not met yet: see
docs/network.md, "Swarm scheduling on slow uplinks") T_last <= 1.5 x T_lb1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal_dev.sim.enterprise import SimOffice, build_enterprise, file_sha256

MIB = 1024 * 1024
CLIENTS = 8
SIZE = 4 * MIB
UP, DOWN, WAN = 20e6, 100e6, 100e6  # bit/s


@dataclass(frozen=True, slots=True)
class SlowUplinksRun:
    t_last: float
    t_lb1: float
    wan_bytes: int
    digests_right: bool


@pytest.fixture(scope="module")
def slow_uplinks(tmp_path_factory: pytest.TempPathFactory) -> SlowUplinksRun:
    root: Path = tmp_path_factory.mktemp("slow-uplinks")
    enterprise = build_enterprise(
        root,
        [
            SimOffice(
                "Branch",
                "10.1.0.0/24",
                CLIENTS,
                wan_rate=WAN / 8,
                client_up_rate=UP / 8,
                client_down_rate=DOWN / 8,
            )
        ],
        package_size=SIZE,
        chunk_size=MIB,
        checkin_seconds=60,
        lease_seconds=10.0,
        link_profiles=True,
    )
    enterprise.run(until=120, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    expected = hashlib.sha256(enterprise.package).hexdigest()
    downloads = [enterprise.download_of(client) for client in enterprise.clients]
    bits = SIZE * 8
    return SlowUplinksRun(
        t_last=max(d.completed_at for d in downloads) - min(d.started_at for d in downloads),
        t_lb1=max(bits / WAN, bits / DOWN, (CLIENTS - 1) * bits / (CLIENTS * UP)),
        wan_bytes=enterprise.wan_bytes_down("Branch"),
        digests_right=all(
            file_sha256(client.store, enterprise.content_id) == expected
            for client in enterprise.clients
        ),
    )


def test_the_office_takes_the_package_over_its_wan_once(slow_uplinks: SlowUplinksRun) -> None:
    assert slow_uplinks.digests_right
    assert slow_uplinks.wan_bytes <= 1.06 * SIZE


@pytest.mark.xfail(
    strict=True,
    reason="issue 9: not met yet with the striped WAN copy: docs/network.md",
)
def test_the_last_client_finishes_within_one_and_a_half_times_the_bound(
    slow_uplinks: SlowUplinksRun,
) -> None:
    assert slow_uplinks.t_last <= 1.5 * slow_uplinks.t_lb1, (
        f"T_last {slow_uplinks.t_last:.2f} s = "
        f"{slow_uplinks.t_last / slow_uplinks.t_lb1:.2f} x T_lb1"
    )
