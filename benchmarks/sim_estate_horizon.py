"""What an estate scenario costs up to a fixed virtual horizon (issue 10), flow mode.

    .venv/bin/python benchmarks/sim_estate_horizon.py SCENARIO --horizon 2.0
        [--seed 1] [--wall-budget 0] [--report OUT.json] [--profile OUT.prof]
        [--devices N --offices M --size-mb S] [--pump-window S]

Runs ``SCENARIO`` (``estate-1k``, ``estate-10k``, a TOML file; ``--devices`` and
friends shrink a generated estate) up to ``--horizon`` virtual seconds (0: to the end)
and prints one JSON line: wall, CPU and max RSS of this process, the build's wall time,
the virtual time reached and the load average. With ``--wall-budget`` the run stops
after that many wall seconds (build included) and says how far it got. ``--report``
writes the report without its ``measured`` block: two checkouts that decide the same
write the same file (the simulator is deterministic), so ``cmp`` tells whether a
speed-up changed a decision. Run it in each checkout with that checkout's venv,
alternated, to compare. ``--pump-window``: ``SimNetwork.pump_window`` (0: one pump per
host per instant; a number: per that many seconds); the line then also gives the
pumps, the polls among them, and the chunks received.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from shoal_dev.sim import network
from shoal_dev.sim.estate import load_scenario, run_scenario


class _OutOfWallTime(Exception):
    """The wall budget ran out."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--horizon", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wall-budget", type=int, default=0)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--devices", type=int)
    parser.add_argument("--offices", type=int)
    parser.add_argument("--size-mb", type=float)
    parser.add_argument("--ci", action="store_true")
    parser.add_argument("--pump-window", type=float)
    args = parser.parse_args()
    scenario = load_scenario(args.scenario, ci=args.ci)
    if args.horizon > 0:
        scenario = replace(scenario, timeout_s=args.horizon)
    if (args.devices or args.offices) and scenario.estate is not None:
        sizes = {"devices": args.devices, "offices": args.offices}
        chosen = {key: value for key, value in sizes.items() if value}
        scenario = replace(scenario, estate=replace(scenario.estate, **chosen))
    if args.size_mb:
        scenario = replace(scenario, size_mb=args.size_mb)

    networks: list[Any] = []
    original_run = network.SimNetwork.run

    def run(self: Any, *rest: Any, **named: Any) -> float:
        networks.append(self)  # to say how far a run cut by the budget got
        return original_run(self, *rest, **named)

    network.SimNetwork.run = run  # type: ignore[method-assign]

    def out_of_time(*_: Any) -> None:
        raise _OutOfWallTime

    signal.signal(signal.SIGALRM, out_of_time)
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    if args.wall_budget:
        signal.alarm(args.wall_budget)
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    document: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as root:
        try:
            # Only when asked: a checkout from before the option still runs this script.
            window = {} if args.pump_window is None else {"pump_window": args.pump_window}
            document = run_scenario(
                scenario,
                seed=args.seed,
                root=Path(root),
                say=lambda line: print(line, flush=True),
                **window,
            )
        except _OutOfWallTime:
            document = None
    signal.alarm(0)
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    figures: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": args.seed,
        "horizon_s": args.horizon,
        "virtual_reached_s": round(networks[0].now, 4) if networks else None,
        "wall_budget_ran_out": document is None,
        "wall_s": round(time.perf_counter() - wall_started, 2),
        "cpu_s": round(time.process_time() - cpu_started, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average": os.getloadavg(),
        "pumps": networks[0].pumps if networks else None,
        "polls": getattr(networks[0], "polls", None) if networks else None,
    }
    if document is not None:
        figures["build_wall_s"] = document["measured"]["build_wall_s"]
        moved = sum(document["bytes_by_source"].values())
        figures["chunks_received"] = round(moved / document["chunk_bytes"])
        if args.report:
            document.pop("measured")
            args.report.write_text(json.dumps(document, indent=1, sort_keys=True))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
