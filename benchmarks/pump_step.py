"""Benchmark: what one step of the pump costs a client when its input left no event.

Builds a simulated office (``shoal_dev.sim.enterprise``: real ``AgentCore`` clients, a
P2P server, 8 clients, 8 MiB in 256 KiB chunks), runs it one virtual second so that a
download is under way, then times ``shoal.net.pump.pump`` on the first client with no
event waiting: a full step (``poll`` and ``get_timer``, what every step was) and a
machine-only step (``machine_input=True``: the machines send and re-arm, the
application is left alone). Process time, so the figure does not follow the load.

    .venv/bin/python benchmarks/pump_step.py [--steps 20000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from shoal.net.pump import pump
from shoal_dev.sim.enterprise import SimOffice, build_enterprise
from shoal_dev.sim.network import _HostTransport

MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        enterprise = build_enterprise(
            Path(root), [SimOffice("Branch", "10.1.0.0/24", 8)], package_size=8 * MIB,
            chunk_size=256 * 1024,
        )  # fmt: skip
        network = enterprise.network
        network.run(until=network.now + 1.0)
        host = enterprise.clients[0].host
        application, machines = host.application, host.machines
        assert application is not None and not application.has_events()
        transport = _HostTransport(network, host)
        for _ in range(options.rounds):
            for label, machine_input in (("full step", False), ("machine-only step", True)):
                started = time.process_time()
                for _ in range(options.steps):
                    pump(application, machines, transport, network.now, machine_input=machine_input)
                spent = (time.process_time() - started) / options.steps
                print(f"{label:18s} {spent * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
