"""CPU a client spends before its first socket is bound, in two builds alternated (issue 9).

Runs ``python -m shoal client run`` of each build (this checkout's and ``--against``'s,
each with its own ``.venv``), round by round in alternation, on loopback with a made-up
enrollment bundle (its P2P server is 127.0.0.1:9, which never answers: nothing is sent
before the first bind anyway). An audit hook (``sys.addaudithook``, put on the client's
``PYTHONPATH`` as ``sitecustomize``) catches the first ``socket.bind`` and writes what
the process had spent by then (``time.process_time``: interpreter, imports,
enrollment, the cache opened) and how many modules it held, then ends the process.
Each run is a first start (a fresh data directory: a device key made, the bundle
enrolled), as every client of a lab run is; ``--restart`` starts each run on the data
directory of an earlier one instead (an enrolled device after a reboot).

Both builds are compiled to bytecode first (``make bytecode``): a module read from
source is compiled again in every process where ``PYTHONDONTWRITEBYTECODE`` is set.
Prints per build the median and min-max of the CPU milliseconds and the modules loaded,
and the load average before and after. Figures, not assertions: the machine is shared.

    .venv/bin/python benchmarks/client_start_cpu.py --against /work/wt-base --runs 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from behaviour_pairs import compile_bytecode

HOOK = r"""
import os, sys
_out = os.environ.get("CLIENT_START_CPU_FILE")
if _out and "--enrollment" in sys.argv:
    import time

    def _first_bind(event, args):
        if event == "socket.bind":
            with open(_out, "a") as output:
                output.write(f"{time.process_time() * 1000:.2f} {len(sys.modules)}\n")
            os._exit(0)

    sys.addaudithook(_first_bind)
"""


def bundle(path: Path) -> Path:
    """An enrollment bundle with a random console key and a server that never answers."""
    document = {
        "format": "shoal-enrollment-1",
        "console_key": os.urandom(32).hex(),
        "console_cert_sha256": None,
        "enrollment_token": os.urandom(16).hex(),
        "server": "127.0.0.1",
        "server_port": 9,
        "ports": None,
    }
    path.write_text(json.dumps(document))
    return path


def start_once(build: Path, work: Path, data_dir: Path, enrollment: Path) -> tuple[float, int]:
    """One client start of ``build``: (CPU ms at the first bind, modules loaded)."""
    output = work / "cpu.txt"
    output.unlink(missing_ok=True)
    environment = {
        **os.environ,
        "PYTHONPATH": str(work / "hook"),
        "CLIENT_START_CPU_FILE": str(output),
    }
    command = [str(build / ".venv/bin/python"), "-m", "shoal", "client", "run"]
    command += ["--data-dir", str(data_dir), "--enrollment", str(enrollment)]
    command += ["--ip", "127.0.0.1", "--prefix", "8", "--bind-ip", "--log-level", "warning"]
    command += ["--discovery-port", "0", "--data-port", "0", "--background-port", "0"]
    subprocess.run(command, cwd=work, env=environment, timeout=60, check=True)
    cpu_ms, modules = output.read_text().split()
    return float(cpu_ms), int(modules)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout with its .venv")
    parser.add_argument("--runs", type=int, default=10, help="runs per build")
    parser.add_argument("--restart", action="store_true", help="an enrolled data directory")
    options = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    builds = {"this": here} | ({"against": options.against.resolve()} if options.against else {})
    figures: dict[str, list[tuple[float, int]]] = {name: [] for name in builds}
    for build in builds.values():
        compile_bytecode(build)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="client-start-") as directory:
        work = Path(directory)
        (work / "hook").mkdir()
        (work / "hook" / "sitecustomize.py").write_text(HOOK)
        enrollment = bundle(work / "bundle.json")
        for round_index in range(options.runs):
            # Alternate which build goes first, so neither always follows the other.
            order = list(builds.items())
            if round_index % 2:
                order.reverse()
            for name, build in order:
                data_dir = work / f"data-{name}" / ("kept" if options.restart else str(round_index))
                if options.restart and not data_dir.exists():
                    start_once(build, work, data_dir, enrollment)  # enrolled once, not counted
                figures[name].append(start_once(build, work, data_dir, enrollment))
    load_after = os.getloadavg()
    kind = "restart (enrolled data directory)" if options.restart else "first start"
    print(f"client start to its first bound socket, {kind}, {options.runs} runs per build")
    for name, build in builds.items():
        cpu = [cpu_ms for cpu_ms, _ in figures[name]]
        modules = [float(count) for _, count in figures[name]]
        print(f"  {name:8s} {build}: CPU ms {summary(cpu)}, modules {summary(modules)}")
    print(f"  load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")


if __name__ == "__main__":
    main()
