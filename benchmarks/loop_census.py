"""What wakes a lab client, counted per process, in two builds alternated (issue 15).

``shoal lab run SCENARIO --ci --system shoal`` of each build, alternated round by round,
with every client process (liars too) under a census hook: a ``sitecustomize`` put on
the clients' ``PYTHONPATH`` (the lab passes its environment on) that counts

* the event loop's iterations (``loop:``) and the callbacks it ran, by name (``cb:``):
  socket readable, timers, the runner's pump, thread hand-offs (``_read_from_self``);
* each transfer engine timer call and what was due at it (``due:`` ACK, PACING,
  REQUEST_RETRY, LOSS, RTO; ``fire:none_due``), and each flow's send step (``send:``:
  calls, packets, calls that sent nothing) in main's deadline heap and in the scanning
  engine before it (da36445);
* the engines' own counters at exit (``eng:``) and the process's CPU (``cpu_ms``): its
  main thread's (``cpu_ms_main_thread``), what it had spent when its sockets were bound
  (``cpu_ms_at_bind``: interpreter, imports, enrollment), and the main thread's CPU
  in each kind of callback (``us:``, microseconds);
* re-arms of the loop timers (``arm:``): kept for the same deadline, moved, new.

Counts, unlike CPU seconds, barely move with the machine's load, so two builds can be
compared on a shared machine; the hook's cost (a counter per callback) is the same in
both. Clients are grouped by role: ``liar`` (the first host of a corrupt-peer office),
``wan`` (fetched from the server), ``lan`` (from peers only). Run as root, from this
build's virtual environment:

    .venv/bin/python benchmarks/loop_census.py /work/wt-old --rounds 3 \\
        --scenario corrupt-peer --this-chunk-kib 1024 --prefix cb- --base 10.202

``--grid FILE`` runs a sweep grid instead (``shoal lab sweep FILE``: shoal and
libtorrent; give it one cell, e.g. the default grid's cell 2 as a ``[base]`` alone);
its clients all count as ``lan``:

    .venv/bin/python benchmarks/loop_census.py /work/wt-old --rounds 2 \\
        --grid cell2.toml --prefix cb- --base 10.202

Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from behaviour_pairs import compile_bytecode

#: The hook, written as ``sitecustomize.py`` into a directory on the clients' path. It
#: patches modules as they are imported (never imports asyncio itself: the client's
#: lean import of asyncio must still come first).
HOOK = r"""
import os, sys
_out = os.environ.get("LOOP_CENSUS_DIR")
if _out and "--enrollment" in sys.argv:
    import atexit, json
    import importlib.abc
    from collections import Counter
    from time import thread_time as _cpu
    _counts = Counter()
    _names = {}
    _engines = []

    def _events(module):
        run = module.Handle._run
        def _run(self):
            f = getattr(self._callback, "__func__", self._callback)
            key = _names.get(id(f))
            if key is None:
                key = _names[id(f)] = getattr(f, "__qualname__", None) or type(f).__name__
            _counts["cb:" + key] += 1
            began = _cpu()
            try:
                return run(self)
            finally:
                _counts["us:" + key] += int((_cpu() - began) * 1e6)
        module.Handle._run = _run

    def _base(module):
        run_once = module.BaseEventLoop._run_once
        def _run_once(self):
            _counts["loop:iterations"] += 1
            return run_once(self)
        module.BaseEventLoop._run_once = _run_once

    def _send_flow(owner, old):
        original = owner._send_flow
        def send_flow(self, flow, now, out):
            before = len(out)
            original(self, flow, now, out)
            sent = len(out) - before
            _counts["send:calls"] += 1
            _counts["send:packets"] += sent
            if not sent:
                _counts["send:nothing"] += 1
        owner._send_flow = send_flow

    def _due_heap(self, now):
        return {k.name for d, _, k, t in self._context.timers.entries
                if d <= now and self._timer_is_live(d, k, t)}

    def _due_scan(self, now, module):
        due = set()
        for d in self._downloads.values():
            if d.ack_deadline is not None and d.ack_deadline <= now:
                due.add("ACK")
            if d.state is module.ReceiveState.REQUESTED and d.retry_at <= now:
                due.add("REQUEST_RETRY")
        for u in self._uploads.values():
            if u.loss_time is not None and u.loss_time <= now:
                due.add("LOSS")
            if u.rto_deadline is not None and u.rto_deadline <= now:
                due.add("RTO")
        for f in self._sending_flows.values():
            if f.pacing_wait_until is not None and f.pacing_wait_until <= now:
                due.add("PACING")
        return due

    def _engine(module):
        engine = module.TransferEngine
        handle_timer, init = engine.handle_timer, engine.__init__
        heap = hasattr(engine, "_timer_is_live")
        def timer(self, now):
            due = _due_heap(self, now) if heap else _due_scan(self, now, module)
            _counts["due:fires"] += 1
            _counts["due:none" if not due else "due:some"] += 1
            for kind in due:
                _counts["due:" + kind] += 1
            return handle_timer(self, now)
        def __init__(self, *a, **k):
            init(self, *a, **k)
            _engines.append(self)
        engine.handle_timer, engine.__init__ = timer, __init__
        if hasattr(engine, "_send_flow"):
            _send_flow(engine, True)

    def _runner(module):
        init = module.ApplicationRunner.__init__
        def __init__(self, *a, **k):
            import time
            _counts["cpu_ms_at_bind"] = int(time.process_time() * 1000)
            init(self, *a, **k)
        module.ApplicationRunner.__init__ = __init__

    def _loop_timer(module):
        arm = module.LoopTimer.arm
        def counted(self, deadline):
            if self._handle is None:
                _counts["arm:new" if deadline is not None else "arm:none"] += 1
            elif self.deadline == deadline:
                _counts["arm:same"] += 1
            else:
                _counts["arm:moved" if deadline is not None else "arm:cancelled"] += 1
            return arm(self, deadline)
        module.LoopTimer.arm = counted

    _patches = {
        "asyncio.events": _events,
        "shoal.net.runner": _runner,
        "shoal.net.loop_timer": _loop_timer,
        "asyncio.base_events": _base,
        "shoal.protocol.transfer.engine": _engine,
        "shoal.protocol.transfer.sender": lambda m: _send_flow(m.Sender, False),
    }

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in _patches:
                return None
            for finder in sys.meta_path:
                if finder is not self and hasattr(finder, "find_spec"):
                    spec = finder.find_spec(name, path, target)
                    if spec is not None:
                        break
            else:
                return None
            exec_module = spec.loader.exec_module
            def exec_and_patch(module):
                exec_module(module)
                _patches[name](module)
            spec.loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, _Finder())

    def _dump():
        import resource
        for engine in _engines:
            counters = getattr(engine, "counters", None)
            for name in getattr(counters, "__dataclass_fields__", {}):
                value = getattr(counters, name)
                if isinstance(value, int):
                    _counts["eng:" + name] += value
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _counts["cpu_ms"] = int((usage.ru_utime + usage.ru_stime) * 1000)
        _counts["cpu_ms_main_thread"] = int(_cpu() * 1000)
        host = sys.argv[sys.argv.index("--hostname") + 1]
        with open(os.path.join(_out, host + "-" + str(os.getpid()) + ".json"), "w") as f:
            json.dump(dict(_counts), f)

    atexit.register(_dump)
"""


def run_build(
    build: Path, options: argparse.Namespace, hook: Path, out: Path, chunk_kib: int | None
) -> dict[str, list[dict[str, float]]]:
    """One lab run of ``build`` under the hook: the census of each client, by role."""
    out.mkdir(parents=True)
    shoal = str(build / ".venv" / "bin" / "shoal")
    if options.grid is not None:
        command = [shoal, "lab", "sweep", str(options.grid.resolve()), "--json"]
        command += [str(out / "run.json")]
    else:
        command = [shoal, "lab", "run", options.scenario, "--ci", "--system", "shoal"]
        command += ["--json", str(out / "run.json")]
    command += ["--prefix", options.prefix, "--base", options.base]
    if chunk_kib is not None:
        command += ["--chunk-kib", str(chunk_kib)]
    # The build's own source before its virtual environment's: checkouts that share one
    # environment (an editable install of another checkout) still run their own code.
    path = os.pathsep.join([str(hook), str(build / "src"), str(build / "dev" / "src")])
    env = {**os.environ, "PYTHONPATH": path, "LOOP_CENSUS_DIR": str(out)}
    done = subprocess.run(command, cwd=build, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        print(f"  {build.name}: failed ({done.returncode}) {tail}", flush=True)
        return {}
    document = json.loads((out / "run.json").read_text())
    if options.grid is not None:
        return _sweep_roles(build, out, document)
    row = document["systems"][0]
    clients = {c["name"]: c for c in row["clients"]}
    liars = int(document.get("corrupt_clients") or 0)  # the first host(s) of each office
    roles: dict[str, list[dict[str, float]]] = defaultdict(list)
    for path in sorted(out.glob("*-*.json")):
        if path.name == "run.json":
            continue
        host = path.stem.rsplit("-", 1)[0]
        census = json.loads(path.read_text())
        if int(host.rsplit("-", 1)[1]) < liars:
            role = "liar"
        elif clients[host]["bytes_from_server"] > 0:
            role = "wan"
        else:
            role = "lan"
        roles[role].append(census)
    print(
        f"  {build.name}: T_last {row['t_last_s']} s, CPU/client {row['cpu_seconds_per_client']}",
        flush=True,
    )
    return roles


def _sweep_roles(build: Path, out: Path, document: dict[str, Any]) -> dict[str, list[Any]]:
    """A sweep's clients (shoal's of its first cell), all as ``lan``."""
    cell = document["cells"][0]
    shoal, torrent = cell["shoal"], cell["libtorrent"]
    censuses = [json.loads(p.read_text()) for p in sorted(out.glob("*-*.json"))]
    print(
        f"  {build.name}: T_last {shoal['t_last_s']} s (libtorrent {torrent.get('t_last_s')}), "
        f"CPU s/MiB {shoal['client_cpu_s_per_mib']} (libtorrent "
        f"{torrent.get('client_cpu_s_per_mib')})",
        flush=True,
    )
    return {"lan": censuses}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other build's checkout (with .venv)")
    parser.add_argument("--this", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--scenario", default="corrupt-peer")
    parser.add_argument("--grid", type=Path, help="a one-cell sweep grid (TOML) instead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefix", default="lc-", help="namespace name prefix")
    parser.add_argument("--base", default="10.218", help="first two octets of the subnets")
    parser.add_argument("--this-chunk-kib", type=int, help="as in behaviour_pairs.py")
    parser.add_argument("--top", type=int, default=30, help="figures shown per role")
    options = parser.parse_args()
    builds = [options.this.resolve(), options.other.resolve()]
    for build in builds:
        compile_bytecode(build)  # else an edited module is compiled again in each client
    census: dict[tuple[int, str], list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="loop-census-") as scratch:
        hook = Path(scratch) / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(HOOK)
        for number in range(options.rounds):
            print(f"round {number + 1}: load {os.getloadavg()}", flush=True)
            for index in [0, 1] if number % 2 == 0 else [1, 0]:
                out = Path(scratch) / f"{index}-{number}"
                chunk_kib = options.this_chunk_kib if index == 0 else None
                for role, rows in run_build(builds[index], options, hook, out, chunk_kib).items():
                    census[(index, role)].extend(rows)
    print(f"\nthis = {builds[0]}, other = {builds[1]}; per client process, median (n)")
    for role in ("wan", "lan", "liar"):
        mine, theirs = census.get((0, role), []), census.get((1, role), [])
        if not mine or not theirs:
            continue
        print(f"\n| {role} | this ({len(mine)}) | other ({len(theirs)}) |\n|---|---|---|")
        keys = {k for row in mine + theirs for k in row}

        def median(rows: list[dict[str, Any]], key: str) -> float:
            return float(statistics.median(row.get(key, 0) for row in rows))

        ranked = sorted(keys, key=lambda k: -abs(median(mine, k) - median(theirs, k)))
        for key in sorted(ranked[: options.top]):
            print(f"| {key} | {median(mine, key):.0f} | {median(theirs, key):.0f} |")
    print(f"\nload after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
