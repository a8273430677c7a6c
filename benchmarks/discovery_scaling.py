"""Discovery datagrams per office against its size (issue 10): one Default office of N
clients, a package assigned to all at once, in the flow-mode simulator.

    .venv/bin/python benchmarks/discovery_scaling.py [--sizes 10,20,40,80,100]
        [--seeds 1,2,3] [--size-mb 4] [--chunk-kib 256]

For each size and seed: discovery datagrams sent (a broadcast counts once) and
received (one per receiving host), per client, the office's T_last against T_lb1, and
the wall time of the run. Prints medians over seeds with their spread (min..max) and
the load average. Counting wraps ``DiscoveryMachine`` at class level, so it measures
whatever discovery the checkout has.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from shoal.protocol.discovery import DiscoveryMachine
from shoal_dev.sim.estate import parse_scenario, run_scenario

COUNTS = {"sent": 0, "received": 0}
LAST: dict[str, Any] = {}


def _count() -> None:
    send, receive = DiscoveryMachine.datagrams_to_send, DiscoveryMachine.receive_datagram

    def datagrams_to_send(self, now):  # type: ignore[no-untyped-def]
        out = send(self, now)
        COUNTS["sent"] += len(out)
        return out

    def receive_datagram(self, data, addr, now):  # type: ignore[no-untyped-def]
        COUNTS["received"] += 1
        return receive(self, data, addr, now)

    DiscoveryMachine.datagrams_to_send = datagrams_to_send  # type: ignore[method-assign]
    DiscoveryMachine.receive_datagram = receive_datagram  # type: ignore[method-assign]


def scenario_text(clients: int, size_mb: float, chunk_kib: int, wan_mbit: float = 50) -> str:
    return f"""
name = "office-{clients}"
size_mb = {size_mb}
chunk_kib = {chunk_kib}
checkin_s = 60
timeout_s = 600
[[office]]
name = "branch"
type = "Default"
clients = {clients}
wan_mbit = {wan_mbit}
client_up_mbit = 1000
"""


def one(
    clients: int, seed: int, size_mb: float, chunk_kib: int, wan_mbit: float = 50
) -> dict[str, float]:
    COUNTS.update(sent=0, received=0)
    scenario = parse_scenario(scenario_text(clients, size_mb, chunk_kib, wan_mbit), "bench")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        document = run_scenario(scenario, mode="flow", seed=seed, root=Path(root))
    wall = time.perf_counter() - started
    LAST["document"] = document
    row = document["offices_detail"][0]
    return {
        "sent": COUNTS["sent"],
        "received": COUNTS["received"],
        "completed": document["completed"] == clients,
        "ratio": row["t_last_over_t_lb1"] or float("inf"),
        "wall": wall,
    }


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _spread(runs: list[dict[str, float]], key: str) -> str:
    values = [run[key] for run in runs]
    return f"{min(values):.4g}..{max(values):.4g}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,20,40,80,100")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--size-mb", type=float, default=4)
    parser.add_argument("--chunk-kib", type=int, default=256)
    parser.add_argument("--wan-mbit", type=float, default=50)
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    args = parser.parse_args()
    _count()
    if args.json:
        for clients in (int(s) for s in args.sizes.split(",")):
            for seed in args.seeds.split(","):
                run = one(clients, int(seed), args.size_mb, args.chunk_kib, args.wan_mbit)
                print(json.dumps({"clients": clients, "seed": int(seed), **run}), flush=True)
        return
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    print("clients  sent(median, min..max)  received  sent/client  T_last/T_lb1  wall s  all done")
    for clients in (int(s) for s in args.sizes.split(",")):
        runs = [
            one(clients, int(seed), args.size_mb, args.chunk_kib, args.wan_mbit)
            for seed in args.seeds.split(",")
        ]

        print(
            f"{clients:7d}  {_median(runs, 'sent'):8.0f} ({_spread(runs, 'sent')})  "
            f"{_median(runs, 'received'):8.0f} ({_spread(runs, 'received')})  "
            f"{_median(runs, 'sent') / clients:7.1f}  {_median(runs, 'ratio'):.3f} "
            f"({_spread(runs, 'ratio')})  {_median(runs, 'wall'):.2f} ({_spread(runs, 'wall')})  "
            f"{all(run['completed'] for run in runs)}",
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
