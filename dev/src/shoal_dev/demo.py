"""``make demo``: a whole shoal site on this machine, distributing one package.

As root, the site is an emulated enterprise in network namespaces: a central office
with the console and the P2P server, and a branch office of clients behind a WAN link
shaped to 50 Mbit/s with HTB. Otherwise it runs on loopback addresses (the branch is
then a WiFi office: clients find each other through the server's peer lists, since
loopback has no broadcast). Either way: the console starts (SQLite), the administrator
saves a licence and the topology, the P2P server registers and is activated, a sample
package (a tar.gz archive) is uploaded with an install specification and assigned to
everyone, and the clients fetch it, each from its peers once the first has it, while
the demo shows their progress; each client then installs it (unpacks the archive into
its data directory and writes a marker file), and the console shows ``installed`` for
every client. A second sample, whose installer fails, shows ``failed`` with its exit
code and the tail of its output after three attempts. Last, the first sample's
assignment is removed: the clients run its uninstall command and the console shows
``uninstalled``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

from shoal import __version__
from shoal_dev.lab.deployment import (
    ADMIN_PASSWORD,
    Deployment,
    LoopbackPlacement,
    NamespacePlacement,
    OfficeSetup,
    Placement,
)
from shoal_dev.lab.netns import cleanup_prefix, lab_available
from shoal_dev.lab.network import EmulatedNetwork, LabOffice

PREFIX = "shd-"
MIB = 1024 * 1024
SAMPLE_INSTALL = {
    # Run in the client's staging directory (DATA_DIR/staging): unpack into
    # DATA_DIR/apps/sample, then write the marker that detection looks for.
    "command": 'sh -c \'mkdir -p ../apps/sample && tar -xzf "$1" -C ../apps/sample '
    "&& date -u > ../apps/sample/INSTALLED && echo unpacked: && ls ../apps/sample' sh {file}",
    "extension": ".tar.gz",
    "timeout_seconds": 120,
    "detect": "test -e ../apps/sample/INSTALLED",
    "uninstall": "rm -rf ../apps/sample",
}
BROKEN_INSTALL = {
    "command": "sh -c 'echo checking prerequisites for {file}; "
    "echo error: this installer needs a newer operating system >&2; exit 42'",
    "extension": ".run",
    "timeout_seconds": 60,
}
RETRY_SECONDS = 2.0
"""The demo's clients retry a failed install after 2 s, then 8 s (default: 30 s, 2 min)."""


def sample_archive(size: int) -> bytes:
    """A tar.gz with a README and ``size`` bytes of payload (random: gzip keeps it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        for name, data in (
            ("README.txt", b"SampleApp 1.0, installed by shoal\n"),
            ("payload.bin", os.urandom(size)),
        ):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mtime = int(time.time())
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def install_line(rows: list[dict[str, Any]]) -> str:
    return "  ".join(
        f"{row['hostname'].split('-')[-1]}:{row['state']}"
        + (f"({row['attempts']})" if row["state"] in ("failed", "installing") else "")
        for row in sorted(rows, key=lambda row: row["hostname"])
    )


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def progress_line(statuses: dict[str, dict[str, Any] | None], content_id: str) -> str:
    cells = []
    for name, status in sorted(statuses.items()):
        entry = None
        if status is not None:
            entry = next((d for d in status["downloads"] if d["content_id"] == content_id), None)
        if entry is None or not entry["chunks"]:
            cells.append(f"{name.split('-')[-1]}:  --")
            continue
        percent = 100 * entry["chunks_done"] // entry["chunks"]
        cells.append(f"{name.split('-')[-1]}:{percent:3d}%")
    return "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=6, help="clients in the branch")
    parser.add_argument("--size-mb", type=int, default=32, help="size of the sample package")
    parser.add_argument("--wan-mbit", type=float, default=50.0, help="branch WAN rate")
    parser.add_argument("--loopback", action="store_true", help="no namespaces, even as root")
    parser.add_argument(
        "--keep", action="store_true", help="keep everything running at the end, until Ctrl-C"
    )
    arguments = parser.parse_args()
    work = Path("demo-data").resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    use_namespaces, why = lab_available()
    use_namespaces = use_namespaces and not arguments.loopback
    print(f"shoal {__version__} demo: console + P2P server + {arguments.clients} clients")
    placement: Placement
    if use_namespaces:
        cleanup_prefix(PREFIX)
        branch = LabOffice("branch", 1, arguments.clients, wan_mbit=arguments.wan_mbit)
        network: EmulatedNetwork | None = EmulatedNetwork.create(PREFIX, [branch], segment_wan=True)
        assert network is not None
        placement = NamespacePlacement(network)
        offices = [OfficeSetup("Branch", branch.subnet, "Default")]
        central = "10.231.0.0/24"
        print(
            f"network namespaces: central office 10.231.0.0/24; branch {branch.subnet} "
            f"behind a {arguments.wan_mbit:g} Mbit/s WAN link (HTB)"
        )
    else:
        network = None
        placement = LoopbackPlacement(arguments.clients)
        offices = [OfficeSetup("Branch", "127.0.1.0/24", "WiFi")]
        central = "127.0.0.0/24"
        print(
            f"loopback addresses ({why or 'asked for'}): central 127.0.0.10, "
            "branch 127.0.1.0/24 as a WiFi office (peer lists from the server)"
        )
    deployment = Deployment(
        placement,
        work,
        offices,
        central,
        loopback=network is None,
        say=lambda line: print(f"   {line}"),
    )
    try:
        step("console: start it (HTTPS, SQLite), log in as the administrator")
        deployment.start_console()
        print(f"   console at {deployment.console_url}  (admin / {ADMIN_PASSWORD!r})")
        print(f"   API docs at {deployment.console_url}/api/v1/docs; data in {work}/console")
        step("administrator: upload the topology, save the licence key (activation)")
        deployment.configure(seats=arguments.clients + 5)
        step("P2P server: start it in the central office; it registers and is activated")
        deployment.start_server()
        deployment.wait_for_server()
        print(
            "   activated; its key certified by the console; enrollment bundle for the "
            f"devices from GET /api/v1/servers/ID/enrollment-bundle (console key "
            f"{deployment.enrollment['console_key'][:16]}...)"
        )
        step(
            f"administrator: upload a {arguments.size_mb} MiB package with its install "
            "command, and a broken one; assign both to everyone"
        )
        package = work / "SampleApp-1.0.tar.gz"
        package.write_bytes(sample_archive(arguments.size_mb * MIB))
        sample = deployment.upload_and_assign(package, install=SAMPLE_INSTALL)
        content_id = sample["content_id"]
        print(f"   content ID {content_id} (the network never sees the name)")
        print(f"   install: {SAMPLE_INSTALL['command']}")
        broken = work / "BrokenApp-0.9.run"
        broken.write_bytes(os.urandom(64 * 1024))
        broken_row = deployment.upload_and_assign(
            broken, name="BrokenApp", version="0.9", install=BROKEN_INSTALL
        )
        print(f"   BrokenApp content ID {broken_row['content_id']}: its installer exits 42")
        time.sleep(1.5)  # the server fetches the content from the console
        wan_before = network.wan_counters("branch") if network is not None else {}
        step("clients: all start at once; the first pulls over the WAN, the rest swarm")
        hosts = placement.office_hosts("branch")
        retry = ["--install-retry-seconds", str(RETRY_SECONDS)]
        deployment.start_clients(hosts, {host.name: retry for host in hosts})
        started = time.monotonic()
        last = [""]

        def show(statuses: dict[str, dict[str, Any] | None]) -> None:
            line = progress_line(statuses, content_id)
            if line != last[0]:
                print(f"   {time.monotonic() - started:5.1f}s  {line}", flush=True)
                last[0] = line

        statuses = deployment.wait_for_clients(content_id, timeout=300, on_progress=show)
        elapsed = time.monotonic() - started
        step(f"done: every client holds the package ({elapsed:.1f} s after they started)")
        expected = hashlib.sha256(package.read_bytes()).hexdigest()
        size = arguments.size_mb * MIB
        for name, status in sorted(statuses.items()):
            entry = next(d for d in status["downloads"] if d["content_id"] == content_id)
            actual = hashlib.sha256(
                deployment.cached_file(deployment.clients[name], content_id).read_bytes()
            ).hexdigest()
            print(
                f"   {name:<10} sha256 {'OK' if actual == expected else 'WRONG'}  "
                f"from peers {entry['bytes_from_peers'] / MIB:6.1f} MiB  from server "
                f"{entry['bytes_from_server'] / MIB:6.1f} MiB  ({entry['source']})"
            )
        if network is not None:
            wan_after = network.wan_counters("branch")
            frames = wan_after["rx_bytes"] - wan_before["rx_bytes"]
            packets = wan_after["rx_packets"] - wan_before["rx_packets"]
            ip_bytes = frames - 14 * packets  # the counters include Ethernet headers
            print(
                f"   the branch WAN link carried {ip_bytes / MIB:.1f} MiB of IP packets = "
                f"{ip_bytes / size:.3f}x the package ({frames / size:.3f}x as Ethernet "
                f"frames; without peer-to-peer: {len(hosts)}x)"
            )
        step("clients: install it (detection, then the command); the console collects results")
        last[0] = ""

        def show_installs(rows: list[dict[str, Any]]) -> None:
            line = install_line(rows)
            if line != last[0]:
                print(f"   {time.monotonic() - started:5.1f}s  {line}", flush=True)
                last[0] = line

        rows = deployment.wait_for_installs(
            "SampleApp", ("installed",), timeout=120, on_progress=show_installs
        )
        for row in sorted(rows, key=lambda row: row["hostname"]):
            host = deployment.clients[row["hostname"]]
            marker = deployment.client_dir(host) / "apps" / "sample" / "INSTALLED"
            print(
                f"   {row['hostname']:<10} console: {row['state']} (exit code "
                f"{row['exit_code']}, attempt {row['attempts']}); marker "
                f"{'present' if marker.exists() else 'MISSING'}: {marker}"
            )
        step("BrokenApp: three attempts with backoff, then failed (exit code, output tail)")
        last[0] = ""
        rows = deployment.wait_for_installs(
            "BrokenApp", ("failed",), timeout=120, on_progress=show_installs
        )
        for row in sorted(rows, key=lambda row: row["hostname"]):
            tail = row["output_tail"].strip().splitlines()[-1:] or [""]
            print(
                f"   {row['hostname']:<10} console: {row['state']} after {row['attempts']} "
                f"attempts, exit code {row['exit_code']}; output ends: {tail[0]!r}"
            )
        print(f"   in the API: GET {deployment.console_url}/api/v1/installs?state=failed")
        step("administrator: remove SampleApp's assignment; the clients run its uninstall")
        assert deployment.admin is not None
        deployment.admin.unassign(sample["id"])
        last[0] = ""
        rows = deployment.wait_for_installs(
            "SampleApp", ("uninstalled",), timeout=60, on_progress=show_installs
        )
        for row in sorted(rows, key=lambda row: row["hostname"]):
            host = deployment.clients[row["hostname"]]
            gone = not (deployment.client_dir(host) / "apps" / "sample").exists()
            print(
                f"   {row['hostname']:<10} console: {row['state']}; "
                f"DATA_DIR/apps/sample {'removed' if gone else 'STILL THERE'}"
            )
        print(
            f"   status of one client: shoal client status --data-dir "
            f"{deployment.client_dir(hosts[0])}"
        )
        if arguments.keep:
            step(f"running until Ctrl-C; the console is at {deployment.console_url}")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\ninterrupted")
    finally:
        step("tearing down every process" + (" and namespace" if network else ""))
        deployment.close()
        print(f"   logs kept in {work}")


if __name__ == "__main__":
    main()
