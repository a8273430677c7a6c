"""What the P2P server sends each client of a simulator sweep cell, window by window.

    .venv/bin/python benchmarks/sim_server_flows.py GRID CELL [--seed 1] [--window 0.02]

Runs one cell of a grid (``shoal sim sweep``'s ``run_cell``: the real agents, server
and transfer engine, virtual time) and prints, per ``--window`` seconds of virtual
time, the Mbit/s of the server's data datagrams (over 200 bytes: not its ACKs and
control answers) to each client and in all: how the WAN copy's stripe flows share the
office's WAN, whether together they overrun it, and where they leave it idle (docs/
network.md, "A slow disk", last paragraph). Nothing here changes a decision: the trace
wraps the network's routing and records it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from shoal_dev.sim import network as sim_network
from shoal_dev.sim.enterprise import SERVER_IP
from shoal_dev.sim.sweep import run_cell
from shoal_dev.sweep import load_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="a shipped simulator grid's name or a TOML path")
    parser.add_argument("cell", type=int, help="the cell's number (from 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=float, default=0.02)
    args = parser.parse_args()
    window = args.window
    sent: defaultdict[str, defaultdict[int, int]] = defaultdict(lambda: defaultdict(int))
    route = sim_network.SimNetwork._route

    def traced(network: Any, sender: Any, port: int, data: bytes, destination: Any) -> None:
        if sender.ip == SERVER_IP and len(data) > 200:
            sent[destination[0]][int(network.now / window)] += len(data)
        route(network, sender, port, data, destination)

    sim_network.SimNetwork._route = traced  # type: ignore[method-assign]
    grid = load_grid(args.grid, "shoal_dev.sim")
    cell = grid.cells[args.cell - 1]
    with tempfile.TemporaryDirectory() as root:
        row = run_cell(cell, Path(root), timeout_s=grid.timeout_s, wall_s=600, seed=args.seed)
    print(f"cell {args.cell} {cell.name} seed {args.seed}: T_last {row['t_last_s']} s")
    clients = sorted(sent, key=lambda ip: tuple(int(part) for part in ip.split(".")))
    if not clients:
        return
    last = max(index for per_window in sent.values() for index in per_window)
    print(
        "window s " + " ".join(ip.rsplit(".", 1)[1].rjust(6) for ip in clients) + "  total Mbit/s"
    )
    for index in range(last + 1):
        rates = [sent[ip].get(index, 0) * 8 / window / 1e6 for ip in clients]
        cells = " ".join(f"{rate:6.1f}" for rate in rates)
        print(f"{index * window:8.3f} {cells}  {sum(rates):6.1f}")


if __name__ == "__main__":
    main()
