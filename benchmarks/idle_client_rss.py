"""Benchmark: the resident memory of an idle client, as a device installs it.

Builds the wheel, installs it without extras into a fresh virtual environment from the
machine's package index (``pip install shoal``: the client alone), and runs that client
in a loopback site (``shoal_dev.lab.deployment``: console and P2P server from this
checkout, addresses 127.0.0.40 and 127.0.4.N, apart from the demo's and the lab's).
Once it holds an assigned package of ``--package-mib`` MiB it is left idle for
``--idle-seconds`` (checking in, serving nobody), then its ``VmRSS`` (now) and
``VmHWM`` (peak, the download included) are read from ``/proc/<pid>/status``.

Target (issue 11): an idle client <= 40 MB RSS. Figures, not assertions: the machine
is shared. ``--client PROGRAM`` measures another client program instead (an unpacked
Debian package's ``opt/shoal/client/bin/shoal``, or this venv's ``shoal``).

    .venv/bin/python benchmarks/idle_client_rss.py
    .venv/bin/python benchmarks/idle_client_rss.py --breakdown \
        --client dist/stage/shoal-client/opt/shoal/client/bin/shoal
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def client_only_install(work: Path) -> Path:
    """``pip install shoal`` (the wheel of this checkout, no extras) in a fresh venv."""
    wheels = work / "wheels"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(wheels), str(REPO)),
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
    print(f"client-only install: {len(wanted)} distributions: {' '.join(wanted)}")
    return venv / "bin" / "shoal"


def memory(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in MB (10^6 bytes)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) * 1024 / 1e6
    return figures


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


def measure(
    work: Path, client: Path, package_mib: int, idle_seconds: float, show_breakdown: bool
) -> dict[str, float]:
    placement = IdlePlacement(1)
    deployment = Deployment(
        placement,
        work / "site",
        [OfficeSetup("branch", "127.0.4.0/24", "WiFi")],
        "127.0.0.0/24",
        loopback=True,
        say=lambda _line: None,
        client_command=(str(client),),
    )
    with deployment:
        deployment.start_console()
        deployment.configure(seats=5)
        deployment.start_server()
        deployment.wait_for_server()
        package = work / "SampleApp.msi"
        package.write_bytes(os.urandom(package_mib * MIB))
        content_id = deployment.upload_and_assign(package)["content_id"]
        (host,) = placement.office_hosts("branch")
        deployment.start_clients([host])
        deployment.wait_for_clients(content_id, timeout=120)
        time.sleep(idle_seconds)
        deployment.check_alive()
        pid = deployment.processes[f"client-{host.name}"].pid
        if show_breakdown:
            for size, path in breakdown(pid):
                print(f"  {size:6.1f} MB  {path}")
        return memory(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", type=Path, help="client program (default: pip install)")
    parser.add_argument("--package-mib", type=int, default=8)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--breakdown", action="store_true", help="largest mappings by RSS")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shoal-idle-rss-"))
    try:
        client = arguments.client.resolve() if arguments.client else client_only_install(work)
        figures = measure(
            work, client, arguments.package_mib, arguments.idle_seconds, arguments.breakdown
        )
        verdict = "meets" if figures["VmRSS"] <= TARGET_MB else "misses"
        print(
            f"idle client ({client}): RSS {figures['VmRSS']:.1f} MB after "
            f"{arguments.idle_seconds:.0f} s idle ({verdict} the {TARGET_MB:.0f} MB target); "
            f"peak {figures['VmHWM']:.1f} MB while fetching {arguments.package_mib} MiB"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
