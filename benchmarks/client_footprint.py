"""Benchmark: a real client's peak memory and CPU per MiB, for packages up to 1 GiB.

Starts a real site on loopback addresses of this host (``shoal_dev.lab.deployment``: a
``shoal console``, a ``shoal server``, ``--clients`` ``shoal client`` processes in a
WiFi office; addresses 127.0.0.30 and 127.0.3.N, apart from the demo's and the lab's),
then for each ``--sizes-mib`` uploads a package of that size (written fast: a random
MiB stamped with its offset), assigns it to everyone, and follows the clients until
they hold it. For each client it prints, while the process still runs:

* peak RSS: ``VmHWM`` of ``/proc/<pid>/status`` (the process's high-water mark);
* CPU seconds (user + system, ``/proc/<pid>/stat``) spent while it received the
  package, per MiB received (from the server and from peers).

With libtorrent installed (``pip install -e ./dev (shoal-dev)``) it then moves the same file
with libtorrent over uTP, one seeder to one downloader on 127.0.0.1 (``shoal bench
transfer``'s baseline, ``shoal_dev.bench.utp_peer``), and prints the downloader's figures
beside the client's: with ``--clients 1`` (the default) both are a pure receiver.

Targets (issue 9): peak RSS <= 64 MB for every size; CPU per MiB <= libtorrent's. A
fresh site per size, so a peak belongs to one package. Figures, not assertions: the
machine is shared. Everything it starts is stopped and its files deleted (``--keep``
keeps the files).

    .venv/bin/python benchmarks/client_footprint.py
    .venv/bin/python benchmarks/client_footprint.py --sizes-mib 64 256 1024 --clients 2 --runs 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.core.packing import pack_stream
from shoal_dev.bench.transfer import Placement, TransferBenchOptions, run_libtorrent
from shoal_dev.lab.deployment import Deployment, LoopbackPlacement, OfficeSetup
from shoal_dev.lab.network import CENTRAL, LabHost

MIB = 1 << 20
MB = 1_000_000
TARGET_RSS_MB = 64.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class FootprintPlacement(LoopbackPlacement):
    """Loopback hosts apart from the demo's (127.0.0.10, 127.0.1.N)."""

    management_address: str = "127.0.0.30"
    processes: list[Any] = field(default_factory=list)

    def office_hosts(self, office: str) -> list[LabHost]:
        if office == CENTRAL:
            return [LabHost(f"{CENTRAL}-0", "", self.management_address, CENTRAL)]
        return [
            LabHost(f"{office}-{index}", "", f"127.0.3.{index + 10}", office)
            for index in range(self.clients)
        ]


def write_package(path: Path, size: int) -> None:
    """``size`` bytes quickly: one random MiB, each copy stamped with its offset."""
    block = bytearray(os.urandom(MIB))
    with open(path, "wb") as output:
        for offset in range(0, size, MIB):
            block[:8] = offset.to_bytes(8, "big")
            output.write(block[: min(MIB, size - offset)])


def resident_bytes(pid: int) -> int:
    """VmRSS of a running process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def process_figures(pid: int) -> tuple[float, int]:
    """(CPU seconds so far, peak RSS bytes) of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def measure_size(work: Path, size_mib: int, clients: int, say: Any) -> list[dict[str, Any]]:
    """One fresh site, one package of ``size_mib`` MiB; the figures of every client."""
    placement = FootprintPlacement(clients)
    deployment = Deployment(
        placement,
        work,
        [OfficeSetup("Branch", "127.0.3.0/24", "WiFi")],
        "127.0.0.0/24",
        loopback=True,
        say=lambda line: None,
    )
    with deployment:
        deployment.start_console()
        deployment.configure(seats=clients + 2)
        deployment.start_server()
        deployment.wait_for_server()
        hosts = placement.office_hosts("branch")
        deployment.start_clients(hosts)
        pids = _wait_for_pids(deployment, hosts)
        baseline = {host.name: process_figures(pids[host.name])[0] for host in hosts}
        idle = {host.name: resident_bytes(pids[host.name]) for host in hosts}
        package = work / "package.bin"
        write_package(package, size_mib * MIB)
        say(f"  {size_mib} MiB: uploading")
        row = deployment.upload_and_assign(package)
        started = time.monotonic()
        last_cpu: dict[str, tuple[float, int]] = {}
        done: dict[str, dict[str, Any]] = {}

        def follow(statuses: dict[str, dict[str, Any] | None]) -> None:
            for host in hosts:
                if host.name in done:
                    continue
                last_cpu[host.name] = process_figures(pids[host.name])
                status = statuses.get(host.name)
                entry = _entry(status, row["content_id"])
                if entry is not None and entry["state"] == "complete":
                    done[host.name] = entry

        deployment.wait_for_clients(row["content_id"], timeout=600 + size_mib, on_progress=follow)
        follow({host.name: deployment.client_status(host) for host in hosts})
        elapsed = time.monotonic() - started
        results = []
        for host in hosts:
            cpu, peak = process_figures(pids[host.name])
            entry = done.get(host.name) or _entry(deployment.client_status(host), row["content_id"])
            assert entry is not None
            received = entry["bytes_from_peers"] + entry["bytes_from_server"]
            cpu_used = last_cpu.get(host.name, (cpu, peak))[0] - baseline[host.name]
            results.append(
                {
                    "client": host.name,
                    "size_mib": size_mib,
                    "peak_rss_mb": peak / MB,
                    "idle_rss_mb": idle[host.name] / MB,
                    "cpu_seconds": cpu_used,
                    "received_mib": received / MIB,
                    "cpu_seconds_per_mib": cpu_used / (received / MIB) if received else 0.0,
                    "from_peers_mib": entry["bytes_from_peers"] / MIB,
                    "seconds": elapsed,
                }
            )
        return results


def libtorrent_reference(work: Path, size_mib: int) -> dict[str, Any] | None:
    """The same package moved by libtorrent (uTP), seeder to downloader; None without it."""
    if importlib.util.find_spec("libtorrent") is None:
        return None
    package = work / "package.bin"
    with open(package, "rb") as stream:
        manifest = pack_stream(stream)
    options = TransferBenchOptions(size_mb=size_mib, namespaces=False)
    placement = Placement("127.0.0.1", "127.0.0.1", "loopback")
    try:
        run = run_libtorrent(placement, options, package, work, manifest)
    finally:
        placement.close()
    receiver = run["receiver"]
    cpu = receiver["cpu"]["cpu_seconds"]
    return {
        "client": "libtorrent",
        "size_mib": size_mib,
        "peak_rss_mb": receiver["peak_rss_bytes"] / MB,
        "idle_rss_mb": 0.0,
        "cpu_seconds": cpu,
        "received_mib": size_mib,
        "cpu_seconds_per_mib": cpu / size_mib,
        "from_peers_mib": size_mib,
        "seconds": receiver["cpu"]["wall_seconds"],
        "sha256_matches": receiver["sha256_matches"],
    }


def _entry(status: dict[str, Any] | None, content_id: str) -> dict[str, Any] | None:
    if status is None:
        return None
    return next((d for d in status["downloads"] if d["content_id"] == content_id), None)


def _wait_for_pids(deployment: Deployment, hosts: list[LabHost]) -> dict[str, int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        deployment.check_alive()
        statuses = {host.name: deployment.client_status(host) for host in hosts}
        if all(status and status.get("registered") for status in statuses.values()):
            return {name: int(status["pid"]) for name, status in statuses.items() if status}
        time.sleep(0.25)
    raise SystemExit("the clients did not register within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--clients", type=int, default=1, help="clients in the office")
    parser.add_argument("--no-libtorrent", action="store_true", help="skip the reference")
    parser.add_argument("--runs", type=int, default=1, help="sites per size")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    arguments = parser.parse_args()
    work_root = Path(tempfile.mkdtemp(prefix="shoal-footprint-"))
    figures: list[dict[str, Any]] = []
    try:
        for size_mib in arguments.sizes_mib:
            for run in range(arguments.runs):
                work = work_root / f"{size_mib}-{run}"
                results = measure_size(work, size_mib, arguments.clients, print)
                if not arguments.no_libtorrent:
                    reference = libtorrent_reference(work, size_mib)
                    if reference is not None:
                        results.append(reference)
                figures += results
                for result in results:
                    print(
                        f"  {size_mib:5d} MiB run {run + 1} {result['client']:<10} peak RSS "
                        f"{result['peak_rss_mb']:6.1f} MB (idle {result['idle_rss_mb']:.1f})  "
                        f"CPU {result['cpu_seconds']:6.2f} s = "
                        f"{result['cpu_seconds_per_mib'] * 1000:6.1f} ms/MiB  "
                        f"(from peers {result['from_peers_mib']:.0f} MiB, "
                        f"{result['seconds']:.1f} s)",
                        flush=True,
                    )
                if not arguments.keep:
                    shutil.rmtree(work, ignore_errors=True)
    finally:
        if not arguments.keep:
            shutil.rmtree(work_root, ignore_errors=True)
    print("\nsize MiB | peak RSS MB median (min-max) | CPU ms/MiB median (min-max) | target")
    for size_mib in arguments.sizes_mib:
        rows = [f for f in figures if f["size_mib"] == size_mib and f["client"] != "libtorrent"]
        rss = [f["peak_rss_mb"] for f in rows]
        cpu = [f["cpu_seconds_per_mib"] * 1000 for f in rows]
        verdict = "met" if max(rss) <= TARGET_RSS_MB else "NOT met"
        print(
            f"{size_mib:8d} | {statistics.median(rss):6.1f} ({min(rss):.1f}-{max(rss):.1f})"
            f"{'':10}| {statistics.median(cpu):6.1f} ({min(cpu):.1f}-{max(cpu):.1f})"
            f"{'':9}| RSS <= {TARGET_RSS_MB:.0f} MB {verdict}"
        )
        reference = [
            f for f in figures if f["size_mib"] == size_mib and f["client"] == "libtorrent"
        ]
        if reference:
            rss = [f["peak_rss_mb"] for f in reference]
            cpu = [f["cpu_seconds_per_mib"] * 1000 for f in reference]
            print(
                f"{'libtorrent':>8} | {statistics.median(rss):6.1f} ({min(rss):.1f}-{max(rss):.1f})"
                f"{'':10}| {statistics.median(cpu):6.1f} ({min(cpu):.1f}-{max(cpu):.1f})"
            )
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
