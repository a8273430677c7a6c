"""What each end of ``shoal bench transfer`` is fed and asked to do, per GB, for builds.

Issue 15: on identical input the receiver costs the same in main as in da36445
(``receiver_replay.py``), yet its CPU per GB through a shaped link differed. This script
counts what the receiver is given and does in a real run, and the sender's bursts, so
two builds can be compared on what the CPU figure does not show:

* socket wake-ups (``_on_readable``) and datagrams per wake-up; timer firings;
* the event loop: iterations, ``call_at`` (timer arms), timer cancels, ``epoll_wait``
  calls that slept (timeout > 0) or polled (timeout 0);
* the engine: ACKs sent, datagrams retransmitted, ``datagrams_to_send`` calls and the
  datagrams per non-empty call (the sender's burst), ``get_timer`` calls;
* garbage collections by generation; page faults and context switches from the first
  request to the last chunk received (``getrusage``); modules imported meanwhile (printed:
  compiled inside the timed part where bytecode is not written);
* the sender's window, smoothed RTT and batch sizes over the run (percentiles);
* the CPU seconds per GB of each process (user and system).

The counting is injected into both processes of each run (a ``sitecustomize`` on
``PYTHONPATH``, which wraps the shell's, the engine's and asyncio's methods), so any
build can be traced unchanged; the wrappers cost the same in every build (the CPU
figures include them: the untraced figures are ``behaviour_pairs.py``'s). Each build is
a checkout with its own ``.venv``; the builds alternate, ``--rounds`` times, and each
figure is printed as median [min-max] over the rounds. Run as root (namespaces):

    .venv/bin/python benchmarks/transfer_wakeups.py . /work/wt-old --rate-mbit 100 \\
        --size-mb 32 --rounds 3 --prefix xa- --base 10.201

The namespaces are renamed as ``behaviour_pairs.py`` does (``--prefix``, ``--base``).
Figures, not assertions; the load average is printed beside each round.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from behaviour_pairs import _TRANSFER_IN_OWN_NAMESPACES, compile_bytecode

GB = 1_000_000_000

#: Installed as ``sitecustomize`` in the benchmark's child processes (``TRACE_DIR`` set).
_COUNTING = r"""
import atexit, collections, gc, json, os, resource, selectors, sys
from asyncio import base_events, events

counts = collections.Counter()
bursts = collections.Counter()


def counted(owner, name, key, measure=None):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        counts[key] += 1
        result = original(*args, **kwargs)
        if measure is not None:
            measure(args, result)
        return result

    setattr(owner, name, wrapper)


def on_select(args, result):
    timeout = args[1] if len(args) > 1 else None
    counts["epoll_poll" if timeout == 0 else "epoll_sleep"] += 1
    if not result:
        counts["epoll_empty"] += 1


peers = []
series = []  # the sender's (time, datagrams sent, cwnd, srtt) per non-empty batch


def on_send(args, result):
    if result:
        counts["send_batches"] += 1
        counts["send_batch_datagrams"] += len(result)
        bursts[len(result)] += 1
        if peers:
            engine, now = args[0], args[1]
            window = engine.flow_window(peers[0], Mode.FOREGROUND)
            series.append((now, len(result), window, engine.flow_srtt(peers[0], Mode.FOREGROUND)))


modules_at_start = []  # sys.modules at the first request (see "late_imports")
usage = {}  # getrusage at the first request and at the last chunk received


def snapshot():
    taken = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "minor_faults": taken.ru_minflt,
        "major_faults": taken.ru_majflt,
        "voluntary_switches": taken.ru_nvcsw,
        "involuntary_switches": taken.ru_nivcsw,
    }


def on_request(args, result):
    if not modules_at_start:
        modules_at_start.append(set(sys.modules))
        usage["first"] = snapshot()


def on_event(args, result):
    if type(result).__name__ == "ChunkReceived":
        usage["last"] = snapshot()


def on_chunk(args, result):
    if not peers:
        peers.append(args[1])


def on_gc(phase, info):
    if phase == "stop":
        counts[f"gc_gen{info['generation']}"] += 1


counted(base_events.BaseEventLoop, "_run_once", "loop_iterations")
counted(base_events.BaseEventLoop, "call_at", "call_at")
counted(events.TimerHandle, "cancel", "timer_cancels")
counted(selectors.EpollSelector, "select", "epoll_calls", on_select)
gc.callbacks.append(on_gc)
try:
    from shoal.net.endpoint import DatagramEndpoint
    from shoal.protocol.transfer import Mode, TransferEngine
except ImportError:
    pass
else:
    counted(DatagramEndpoint, "_on_readable", "readable_wakeups")
    counted(DatagramEndpoint, "_on_timer", "timer_wakeups")
    counted(TransferEngine, "datagrams_to_send", "datagrams_to_send", on_send)
    counted(TransferEngine, "get_timer", "get_timer")
    counted(TransferEngine, "handle_timer", "handle_timer")
    counted(TransferEngine, "send_chunk", "send_chunk", on_chunk)
    counted(TransferEngine, "request_chunk", "request_chunk", on_request)
    counted(TransferEngine, "next_event", "next_event", on_event)


def write():
    role = next((a for a in sys.argv if a in ("serve", "fetch")), None)
    if role is None:
        return
    document = {
        "counts": dict(counts),
        "bursts": {str(k): v for k, v in bursts.items()},
        "series": series,
        "usage": {k: usage["last"][k] - usage["first"][k] for k in usage["last"]}
        if "last" in usage
        else {},
        # Imported during the transfer (after the first request): compiled in the timed part
        # unless byte-compiled before.
        "late_imports": sorted(set(sys.modules) - modules_at_start[0]) if modules_at_start else [],
    }
    path = os.path.join(os.environ["TRACE_DIR"], f"{role}-{os.getpid()}.json")
    with open(path, "w") as out:
        json.dump(document, out)


atexit.register(write)
"""


def run_once(
    build: Path, rate: float, size_mb: int, prefix: str, base: str, scratch: Path
) -> dict[str, Any]:
    """One traced transfer with ``build``; its counts and figures, per GB where it says."""
    trace_dir = Path(tempfile.mkdtemp(dir=scratch))
    (trace_dir / "sitecustomize.py").write_text(_COUNTING)
    out = trace_dir / "result.json"
    command = [str(build / ".venv" / "bin" / "python"), "-c", _TRANSFER_IN_OWN_NAMESPACES]
    command += [prefix, base, "bench", "transfer", "--rate-mbit", f"{rate:g}"]
    command += ["--size-mb", str(size_mb), "--no-baseline", "--json", str(out)]
    environment = {**os.environ, "PYTHONPATH": str(trace_dir), "TRACE_DIR": str(trace_dir)}
    done = subprocess.run(
        command, cwd=build, env=environment, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"{build}: the transfer failed: {done.stderr.strip()[-500:]}")
    document = json.loads(out.read_text())
    processes = document["shoal_processes"]
    gigabytes = document["size_bytes"] / GB
    figures: dict[str, Any] = {"MB/s": document["shoal_runs"][0]["payload_mb_per_s"]}
    for role, side in (("fetch", "receiver"), ("serve", "sender")):
        traced = json.loads(next(trace_dir.glob(f"{role}-*.json")).read_text())
        counts = traced["counts"]
        process = processes[side]
        engine, sock = process["engine"], process["socket"]
        per_gb = {
            "CPU s": process["cpu"]["cpu_seconds"],
            "user s": process["cpu"]["user_seconds"],
            "system s": process["cpu"]["system_seconds"],
            "datagrams in": engine["datagrams_received"],
            "datagrams out": engine["datagrams_sent"],
            "ACKs sent": engine["acks_sent"],
            "ACKs received": engine["acks_received"],
            "retransmitted": engine["data_packets_retransmitted"],
            "recvmsg with data": sock["receive_calls"],
            "send calls": sock["send_calls"],
            **{key: counts.get(key, 0) for key in COUNTED},
            **traced["usage"],
        }
        figures.update({f"{side} {key} /GB": value / gigabytes for key, value in per_gb.items()})
        wakeups = counts.get("readable_wakeups", 0)
        batches = counts.get("send_batches", 0)
        figures[f"{side} datagrams per readable wake-up"] = (
            engine["datagrams_received"] / wakeups if wakeups else 0.0
        )
        figures[f"{side} datagrams per send batch"] = (
            counts.get("send_batch_datagrams", 0) / batches if batches else 0.0
        )
        if traced["late_imports"]:
            print(f"  {build.name} {side} imported meanwhile: {traced['late_imports']}")
        if side == "sender" and traced["series"]:
            figures.update(sender_series(traced["series"]))
    return figures


def sender_series(series: list[list[float]]) -> dict[str, float]:
    """The sender's window, round trip and bursts over the run (medians, percentiles)."""
    windows = [window for _, _, window, _ in series if window is not None]
    round_trips = [srtt for _, _, _, srtt in series if srtt is not None]
    sizes = sorted(size for _, size, _, _ in series)
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(series))
    figures = {
        "sender batch p10": sizes[len(sizes) // 10],
        "sender batch p50": sizes[len(sizes) // 2],
        "sender batch p90": sizes[len(sizes) * 9 // 10],
        "sender ms between batches p50": 1000 * gaps[len(gaps) // 2] if gaps else 0.0,
    }
    if windows and round_trips:
        figures["sender cwnd p50"] = statistics.median(windows)
        figures["sender srtt ms p50"] = 1000 * statistics.median(round_trips)
    return figures


#: The counts of ``_COUNTING`` printed per GB.
COUNTED = (
    "readable_wakeups",
    "timer_wakeups",
    "loop_iterations",
    "epoll_sleep",
    "epoll_poll",
    "epoll_empty",
    "call_at",
    "timer_cancels",
    "datagrams_to_send",
    "send_batches",
    "get_timer",
    "handle_timer",
    "gc_gen0",
    "gc_gen1",
    "gc_gen2",
)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    middle = statistics.median(values)
    return f"{middle:.4g} [{min(values):.4g}-{max(values):.4g}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", type=Path, help="checkouts, each with its .venv")
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefix", default="twk-", help="namespace name prefix")
    parser.add_argument("--base", default="10.218", help="first two octets of the subnets")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    options = parser.parse_args()
    builds = [build.resolve() for build in options.builds]
    for build in builds:
        compile_bytecode(build)
    results: dict[Path, list[dict[str, Any]]] = {build: [] for build in builds}
    with tempfile.TemporaryDirectory(prefix="transfer-wakeups-") as scratch:
        for number in range(options.rounds):
            print(f"round {number + 1}: load {os.getloadavg()}", flush=True)
            shift = number % len(builds)
            for build in builds[shift:] + builds[:shift]:
                figures = run_once(
                    build, options.rate_mbit, options.size_mb, options.prefix, options.base,
                    Path(scratch),
                )  # fmt: skip
                results[build].append(figures)
                print(
                    f"  {build.name}: {figures['MB/s']:.2f} MB/s, receiver CPU "
                    f"{figures['receiver CPU s /GB']:.2f} s/GB",
                    flush=True,
                )
    print(f"\n{options.size_mb} MB at {options.rate_mbit:g} Mbit/s; median [min-max] over rounds")
    print("| figure | " + " | ".join(build.name for build in builds) + " |")
    print("|---|" + "---|" * len(builds))
    for figure in results[builds[0]][0]:
        cells = [spread([run[figure] for run in results[build]]) for build in builds]
        print(f"| {figure} | " + " | ".join(cells) + " |")
    print(f"load after: {os.getloadavg()}")
    if options.json is not None:
        options.json.write_text(json.dumps({str(b): runs for b, runs in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
