"""Simulated office on slow asymmetric client links: T_last against T_lb1, WAN bytes.

One office of N clients whose own links carry 20 Mbit/s up and 100 Mbit/s down behind a
100 Mbit/s WAN (issue 9's first row), a package cut as the console cuts an upload
(``chunk_size_for``: 128 KiB chunks for 8 MiB, 256 KiB for 32 MiB) assigned to everyone
at once, on the simulator's virtual clock with the real agents,
server and stores. For each package size it runs a few seeds and prints the median and
the spread (min-max) of:

* T_last / T_lb1, with T_lb1 = max(F/C_wan, F/d_min, (N-1)F/sum_u) (issue 9, deliverable
  1: one WAN copy per office; here the uplinks bind);
* WAN bytes / F (the office's WAN downlink, IP bytes, control traffic included);
* wall seconds per run.

Targets (issue 9): T_last <= 1.3 x T_lb1, WAN <= 1.05 F. Figures are printed, not
asserted. Run: ``.venv/bin/python benchmarks/slow_uplinks_sim.py`` (a few minutes);
``--clients``, ``--sizes``, ``--seeds``, ``--up-mbit``, ``--down-mbit``, ``--wan-mbit``,
``--chunk-kib`` (default 0: the product's chunk size) change the set-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shoal.core.chunking import chunk_size_for
from shoal_dev.sim.enterprise import SimOffice, build_enterprise

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    ratio: float
    wan: float
    wall: float
    binding: str


def one_copy_bound(
    size: int, clients: int, wan_bits: float, up_bits: float, down_bits: float
) -> tuple[float, str]:
    """T_lb1 (seconds) and its binding term (computed here until ``shoal.core.bounds``)."""
    bits = size * 8
    terms = {
        "wan": bits / wan_bits,
        "downlink": bits / down_bits,
        "uplinks": (clients - 1) * bits / (clients * up_bits),
    }
    binding = max(terms, key=terms.__getitem__)
    return terms[binding], binding


def run_once(args: argparse.Namespace, size: int, seed: int) -> Outcome:
    up, down, wan = args.up_mbit * 1e6, args.down_mbit * 1e6, args.wan_mbit * 1e6
    with tempfile.TemporaryDirectory() as root:
        enterprise = build_enterprise(
            Path(root),
            [
                SimOffice(
                    "Branch",
                    "10.1.0.0/24",
                    args.clients,
                    wan_rate=wan / 8,
                    client_up_rate=up / 8,
                    client_down_rate=down / 8,
                )
            ],
            package_size=size,
            chunk_size=args.chunk_kib * 1024 or chunk_size_for(size),
            seed=seed,
            checkin_seconds=60,
            lease_seconds=10.0,
            link_profiles=True,
        )
        started = time.perf_counter()
        enterprise.run(until=600, stop=enterprise.all_complete)
        wall = time.perf_counter() - started
        if not enterprise.all_complete():
            raise SystemExit(f"{size // MIB} MiB, seed {seed}: not every client finished")
        downloads = [enterprise.download_of(client) for client in enterprise.clients]
        first = min(download.started_at for download in downloads)
        last = max(download.completed_at for download in downloads)
        bound, binding = one_copy_bound(size, args.clients, wan, up, down)
        return Outcome(
            (last - first) / bound, enterprise.wan_bytes_down("Branch") / size, wall, binding
        )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32], help="MiB")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--up-mbit", type=float, default=20)
    parser.add_argument("--down-mbit", type=float, default=100)
    parser.add_argument("--wan-mbit", type=float, default=100)
    parser.add_argument("--chunk-kib", type=int, default=0, help="0: chunk_size_for")
    args = parser.parse_args()
    print(
        f"{args.clients} clients, {args.up_mbit:g}/{args.down_mbit:g} Mbit/s up/down, "
        f"WAN {args.wan_mbit:g} Mbit/s, "
        + (f"{args.chunk_kib} KiB chunks" if args.chunk_kib else "chunk_size_for's chunks")
        + f", seeds {args.seeds}: "
        "median (min-max)"
    )
    print(f"{'MiB':>5} {'chunk':>6} {'binds':>8} {'T_last/T_lb1':>18} {'WAN/F':>18} {'wall s':>18}")
    for size_mib in args.sizes:
        outcomes = [run_once(args, size_mib * MIB, seed) for seed in args.seeds]
        print(
            f"{size_mib:>5} {(args.chunk_kib or chunk_size_for(size_mib * MIB) // 1024):>4}K "
            f"{outcomes[0].binding:>8} "
            f"{spread([o.ratio for o in outcomes]):>18} "
            f"{spread([o.wan for o in outcomes]):>18} "
            f"{spread([o.wall for o in outcomes]):>18}"
        )


if __name__ == "__main__":
    main()
