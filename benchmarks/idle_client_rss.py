"""Benchmark: the resident memory of an idle client, as a device installs it.

Builds the wheel, installs it without extras into a fresh virtual environment from the
machine's package index (``pip install shoal``: the client alone), and runs that client
in a loopback site (``shoal_dev.lab.deployment``: console and P2P server from this
checkout, addresses 127.0.0.40 and 127.0.4.N, apart from the demo's and the lab's).
Once it holds an assigned package of ``--package-mib`` MiB it is left idle for
``--idle-seconds`` (checking in, serving nobody), then its ``VmRSS`` (now) and
``VmHWM`` (peak, the download included) are read from ``/proc/<pid>/status``, with
the CPU time it spent idle (``/proc/<pid>/stat``), and the client is stopped.
``--runs`` clients are measured one after another on the same site (each a new device
with its own data directory), and the median and range printed.

Target (issue 11): an idle client <= 40 MB RSS. Figures, not assertions: the machine
is shared. ``--client PROGRAM`` measures another client program instead (an unpacked
Debian package's ``opt/shoal/client/bin/shoal``, or this venv's ``shoal``); given more
than once, or with ``--against REV`` (a client-only install of that git revision as
well), the programs' runs alternate, so a before/after comparison shares the load.

    .venv/bin/python benchmarks/idle_client_rss.py --runs 5
    .venv/bin/python benchmarks/idle_client_rss.py --against main~3 --runs 4
    .venv/bin/python benchmarks/idle_client_rss.py --breakdown \
        --client dist/stage/shoal-client/opt/shoal/client/bin/shoal
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal_dev.lab.deployment import Deployment, LoopbackPlacement, OfficeSetup
from shoal_dev.lab.network import CENTRAL, LabHost

REPO = Path(__file__).resolve().parent.parent
LOCAL_INDEX = Path("/opt/pypi/simple")
TARGET_MB = 40.0
MIB = 1 << 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class IdlePlacement(LoopbackPlacement):
    """Loopback hosts apart from the demo's (127.0.0.10) and client_footprint's (.30)."""

    management_address: str = "127.0.0.40"
    processes: list[Any] = field(default_factory=list)

    def office_hosts(self, office: str) -> list[LabHost]:
        if office == CENTRAL:
            return [LabHost(f"{CENTRAL}-0", "", self.management_address, CENTRAL)]
        return [
            LabHost(f"{office}-{index}", "", f"127.0.4.{index + 10}", office)
            for index in range(self.clients)
        ]


def client_only_install(work: Path, revision: str | None = None) -> Path:
    """``pip install shoal`` (the wheel of this checkout, or of git ``revision``; no
    extras) in a fresh venv under ``work``."""
    work.mkdir(parents=True)
    source = REPO
    if revision is not None:
        source = work / "source"
        source.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    wheels = work / "wheels"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(wheels), str(source)),
        ],
        check=True,
    )
    venv = work / "client-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    index = ["--index-url", LOCAL_INDEX.as_uri()] if LOCAL_INDEX.is_dir() else []
    (wheel,) = wheels.glob("shoal-*.whl")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", *index, str(wheel)], check=True
    )
    listing = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wanted = [line for line in listing if not line.startswith(("pip==", "setuptools=="))]
    print(
        f"client-only install of {revision or 'this checkout'}: "
        f"{len(wanted)} distributions: {' '.join(wanted)}"
    )
    return venv / "bin" / "shoal"


def memory(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in MB (10^6 bytes)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) * 1024 / 1e6
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def breakdown(pid: int, top: int = 10) -> list[tuple[float, str]]:
    """The ``top`` mappings of ``pid`` by resident size (MB, name): where memory goes."""
    totals: dict[str, int] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:
            name = fields[5] if len(fields) > 5 else "[anonymous]"
        elif fields and fields[0] == "Rss:":
            totals[name] = totals.get(name, 0) + int(fields[1]) * 1024
    ranked = sorted(((size / 1e6, path) for path, size in totals.items()), reverse=True)
    return ranked[:top]


@dataclass
class Site:
    """A console and a P2P server on loopback, and a package assigned to every client."""

    work: Path
    package_mib: int
    placement: IdlePlacement = field(init=False)
    deployment: Deployment = field(init=False)
    content_id: str = ""

    def __enter__(self) -> Site:
        self.placement = IdlePlacement(0)
        self.deployment = Deployment(
            self.placement,
            self.work / "site",
            [OfficeSetup("branch", "127.0.4.0/24", "WiFi")],
            "127.0.0.0/24",
            loopback=True,
            say=lambda _line: None,
        )
        deployment = self.deployment.__enter__()
        deployment.start_console()
        deployment.configure(seats=100)
        deployment.start_server()
        deployment.wait_for_server()
        package = self.work / "SampleApp.msi"
        package.write_bytes(os.urandom(self.package_mib * MIB))
        self.content_id = deployment.upload_and_assign(package)["content_id"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.deployment.__exit__(*exc)

    def measure(self, client: Path, idle_seconds: float, show_breakdown: bool) -> dict[str, float]:
        """Start one new client, let it fetch the package, idle, measure it, stop it."""
        self.placement.clients += 1
        host = self.placement.office_hosts("branch")[-1]
        deployment = self.deployment
        deployment.client_commands[host.name] = (str(client),)
        deployment.start_clients([host])
        name = f"client-{host.name}"
        try:
            deployment.wait_for_clients(self.content_id, timeout=120)
            pid = deployment.processes[name].pid
            cpu_before = cpu_seconds(pid)
            time.sleep(idle_seconds)
            deployment.check_alive()
            if show_breakdown:
                for size, path in breakdown(pid):
                    print(f"  {size:6.1f} MB  {path}")
            idle_cpu = (cpu_seconds(pid) - cpu_before) / idle_seconds * 1000
            return {**memory(pid), "idle_cpu_ms_per_s": idle_cpu}
        finally:  # the next client is measured alone
            process = deployment.processes.pop(name)
            process.terminate()
            process.wait(timeout=30)
            del deployment.clients[host.name]


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.1f} MB "
        f"({min(values):.1f}-{max(values):.1f}, {len(values)} runs: "
        + ", ".join(f"{value:.1f}" for value in values)
        + ")"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--client",
        type=Path,
        action="append",
        default=[],
        help="client program (default: pip install of this checkout); more than once: alternated",
    )
    parser.add_argument(
        "--against", metavar="REV", help="also a client-only install of this git revision"
    )
    parser.add_argument("--runs", type=int, default=3, help="clients measured per program")
    parser.add_argument("--package-mib", type=int, default=8)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--breakdown", action="store_true", help="largest mappings by RSS")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shoal-idle-rss-"))
    try:
        programs = {str(client): client.resolve() for client in arguments.client}
        if not programs:
            programs["this checkout"] = client_only_install(work / "this")
        if arguments.against:
            label = f"{arguments.against} ({_short(arguments.against)})"
            programs[label] = client_only_install(work / "against", arguments.against)
        figures: dict[str, list[dict[str, float]]] = {label: [] for label in programs}
        with Site(work, arguments.package_mib) as site:
            for run in range(arguments.runs):
                for label, program in programs.items():
                    measured = site.measure(
                        program, arguments.idle_seconds, arguments.breakdown and run == 0
                    )
                    figures[label].append(measured)
                    print(
                        f"run {run + 1} {label}: RSS {measured['VmRSS']:.1f} MB idle, "
                        f"peak {measured['VmHWM']:.1f} MB, idle CPU "
                        f"{measured['idle_cpu_ms_per_s']:.1f} ms/s",
                        flush=True,
                    )
        for label, runs in figures.items():
            idle = [run["VmRSS"] for run in runs]
            verdict = "meets" if statistics.median(idle) <= TARGET_MB else "misses"
            print(
                f"idle client, {label}: RSS after {arguments.idle_seconds:.0f} s idle "
                f"{summary(idle)}, {verdict} the {TARGET_MB:.0f} MB target; peak while "
                f"fetching {arguments.package_mib} MiB {summary([r['VmHWM'] for r in runs])}; "
                "idle CPU median "
                f"{statistics.median(r['idle_cpu_ms_per_s'] for r in runs):.1f} ms per s"
            )
        print(f"load average: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _short(revision: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


if __name__ == "__main__":
    main()
