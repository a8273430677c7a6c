"""What a complete device's check-in costs in the estate simulator (issue 10).

    .venv/bin/python benchmarks/sim_checkin_cost.py [--devices 200 --offices 10]
        [--size-mb 1] [--idle 600] [--seed 1] [--profile OUT.prof]

Runs a generated estate (``estate-10k``'s shape, shrunk) until every device is
complete, then ``--idle`` more virtual seconds in which the only work is the devices'
check-ins (every ``checkin_s``, 60 s) and the timers around them. Prints one JSON line:
the CPU of the idle part, the check-ins the server answered in it, the pumps, and the
CPU per check-in (both ends, the simulator included). ``estate-10k``'s VPN office keeps
its 10,000 devices checking in for ~4,900 virtual s after most are complete (~818,000
check-ins): this is that part of the run. Run it in each checkout with that checkout's
venv, alternated, to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from shoal_dev.sim import enterprise as enterprise_module
from shoal_dev.sim.estate import load_scenario, run_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--offices", type=int, default=10)
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--idle", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    scenario = load_scenario("estate-10k")
    assert scenario.estate is not None
    estate = replace(scenario.estate, devices=args.devices, offices=args.offices)
    scenario = replace(scenario, estate=estate, size_mb=args.size_mb)
    figures: dict[str, Any] = {}
    original_run = enterprise_module.Enterprise.run

    def run(self: Any, until: float, stop: Any = None) -> float:
        reached = original_run(self, until, stop)  # to every device's completion
        control = self.server.control
        answered, pumps = control.counters.answered, self.network.pumps
        profile = None
        if args.profile:
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
        cpu_started = time.process_time()
        reached = original_run(self, reached + args.idle, None)
        cpu = time.process_time() - cpu_started
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.profile)
        check_ins = control.counters.answered - answered
        figures.update(
            idle_virtual_s=args.idle,
            idle_cpu_s=round(cpu, 3),
            answered=check_ins,
            pumps=self.network.pumps - pumps,
            cpu_us_per_answer=round(cpu / max(check_ins, 1) * 1e6, 1),
        )
        return reached

    enterprise_module.Enterprise.run = run  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as root:
        run_scenario(scenario, seed=args.seed, root=Path(root))
    figures["devices"] = args.devices
    figures["load_average"] = os.getloadavg()
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
