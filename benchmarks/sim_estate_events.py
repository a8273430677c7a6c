"""Where an estate run's time goes, by event (issue 10), flow mode.

    .venv/bin/python benchmarks/sim_estate_events.py SCENARIO --horizon 1.0
        [--bucket 0.1] [--seed 1] [--wall-budget 0] [--devices N --offices M]

Runs ``SCENARIO`` (as ``sim_estate_horizon.py``) up to ``--horizon`` virtual seconds
and prints: the events by kind (the action's function) with their count and the wall
time inside them; the datagrams delivered by receiving machine and message type
(the first byte after magic and version), with the time inside them (the host's pump,
so the agent's poll, included); and per ``--bucket`` of virtual time, the events and
pumps (an application's poll after an input). Timing each event costs about a
microsecond: compare kinds with each other, not with unmeasured runs.
"""

from __future__ import annotations

import argparse
import collections
import heapq
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


def _kind(action: Any) -> str:
    name = getattr(action, "__qualname__", type(action).__name__)
    return str(name).replace("<locals>.", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--horizon", type=float, required=True)
    parser.add_argument("--bucket", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wall-budget", type=int, default=0)
    parser.add_argument("--devices", type=int)
    parser.add_argument("--offices", type=int)
    args = parser.parse_args()
    scenario = replace(load_scenario(args.scenario), timeout_s=args.horizon)
    if (args.devices or args.offices) and scenario.estate is not None:
        sizes = {"devices": args.devices, "offices": args.offices}
        chosen = {key: value for key, value in sizes.items() if value}
        scenario = replace(scenario, estate=replace(scenario.estate, **chosen))

    count: collections.Counter[str] = collections.Counter()
    spent: collections.defaultdict[str, float] = collections.defaultdict(float)
    events_in: collections.Counter[int] = collections.Counter()
    pumps_in: collections.Counter[int] = collections.Counter()
    delivered: collections.Counter[tuple[str, str]] = collections.Counter()
    delivery_spent: collections.defaultdict[tuple[str, str], float] = collections.defaultdict(float)
    hosts: set[str] = set()
    clock = time.perf_counter
    original_pump, original_deliver = network.SimNetwork.pump, network.SimNetwork._deliver

    def pump(self: Any, host: Any, **named: Any) -> None:
        hosts.add(host.ip)
        pumps_in[int(self.now / args.bucket)] += 1
        original_pump(self, host, **named)

    def deliver(
        self: Any, receiver: Any, port: int, data: bytes, source: Any, **named: Any
    ) -> None:
        key = (type(receiver.machines.get(port)).__name__, f"0x{data[3]:02x}" if data[3:] else "?")
        started = clock()
        original_deliver(self, receiver, port, data, source, **named)
        delivery_spent[key] += clock() - started
        delivered[key] += 1

    def run(self: Any, until: float, stop: Any = None) -> float:
        queue = self._queue
        while queue and queue[0][0] <= until:
            when, _, action, source = heapq.heappop(queue)
            self.now = max(self.now, when)
            if source:
                self._count(source)
            kind, started = _kind(action), clock()
            action()
            spent[kind] += clock() - started
            count[kind] += 1
            events_in[int(self.now / args.bucket)] += 1
            if stop is not None and stop():
                break
        return float(self.now)

    network.SimNetwork.pump = pump  # type: ignore[method-assign]
    network.SimNetwork._deliver = deliver  # type: ignore[method-assign]
    network.SimNetwork.run = run  # type: ignore[method-assign]

    def out_of_time(*_: Any) -> None:
        raise _OutOfWallTime

    signal.signal(signal.SIGALRM, out_of_time)
    if args.wall_budget:
        signal.alarm(args.wall_budget)
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as root:
        try:
            run_scenario(scenario, seed=args.seed, root=Path(root), say=print)
        except _OutOfWallTime:
            print("wall budget ran out")
    signal.alarm(0)
    print(
        f"wall {time.perf_counter() - wall_started:.1f} s, CPU "
        f"{time.process_time() - cpu_started:.1f} s; {sum(count.values())} events, "
        f"{sum(pumps_in.values())} pumps of {len(hosts)} hosts"
    )
    for kind, events in count.most_common(12):
        each = spent[kind] / events * 1e6
        print(f"  {kind:48s} {events:9d} {spent[kind]:8.2f} s {each:8.1f} us each")
    print("datagrams delivered (receiving machine, type):")
    for key, datagrams in delivered.most_common(16):
        each = delivery_spent[key] / datagrams * 1e6
        print(
            f"  {key[0]:20s} {key[1]:5s} {datagrams:9d} {delivery_spent[key]:8.2f} s {each:8.1f} us"
        )
    print(f"per {args.bucket} virtual s: events, pumps")
    for bucket in sorted(events_in):
        print(f"  {bucket * args.bucket:8.2f} s {events_in[bucket]:9d} {pumps_in[bucket]:9d}")


if __name__ == "__main__":
    main()
