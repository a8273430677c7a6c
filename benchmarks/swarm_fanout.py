"""Simulated office: how the swarm's fan-out limit paces an office on slow client links.

One office behind a 50 Mbit/s WAN, clients on links of a given rate, a package assigned
to everyone at once, on the simulator's virtual clock (real agents, server and stores).
For each case it prints the last client's time against the Kumar-Ross lower bound, with
the fan-out limit (one downloader fetches each new chunk from its first holder) and
without it (every downloader may). Figures are printed, not asserted. Run:
``.venv/bin/python benchmarks/swarm_fanout.py`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from shoal_dev.sim.enterprise import SimOffice, build_enterprise

MIB = 1024 * 1024
WAN_BITS = 50e6
CASES = ((200, 6), (1000, 6), (200, 12), (100, 6), (1000, 12))  # (client Mbit/s, clients)
UNLIMITED = 1_000_000  # every downloader counts as chosen: the limit is off


def last_client_seconds(nic_mbit: int, clients: int, size_mb: int, fanout: int) -> float:
    with tempfile.TemporaryDirectory() as root:
        office = SimOffice(
            "Cafe", "10.2.0.0/24", clients, WAN_BITS / 8, nic_rate=nic_mbit * 1e6 / 8
        )
        enterprise = build_enterprise(
            Path(root),
            [office],
            package_size=size_mb * MIB,
            chunk_size=256 * 1024,
            checkin_seconds=60,
            swarm_fanout=fanout,
        )
        enterprise.run(until=300, stop=enterprise.all_complete)
        if not enterprise.all_complete():
            raise SystemExit(f"{clients} clients at {nic_mbit} Mbit/s did not finish")
        started = min(enterprise.download_of(c).started_at for c in enterprise.clients)
        return max(enterprise.download_of(c).completed_at for c in enterprise.clients) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=16)
    size_mb = parser.parse_args().size_mb
    bits = size_mb * MIB * 8
    print(f"office behind {WAN_BITS / 1e6:.0f} Mbit/s, {size_mb} MiB: T_last / T_lb")
    print(f"{'client links':>12} {'clients':>7} {'T_lb s':>7} {'limit on':>9} {'limit off':>9}")
    for nic_mbit, clients in CASES:
        bound = max(
            bits / WAN_BITS,
            bits / (nic_mbit * 1e6),
            clients * bits / (WAN_BITS + clients * nic_mbit * 1e6),
        )
        on = last_client_seconds(nic_mbit, clients, size_mb, 1) / bound
        off = last_client_seconds(nic_mbit, clients, size_mb, UNLIMITED) / bound
        print(f"{nic_mbit:>7} Mbit {clients:>7} {bound:>7.2f} {on:>9.2f} {off:>9.2f}")


if __name__ == "__main__":
    main()
