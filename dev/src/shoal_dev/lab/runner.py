"""``shoal lab run``: one scenario, every system, the same network and file, measured.

Theory of operation
-------------------
``run_scenario`` builds the scenario's enterprise once (``EmulatedNetwork``: a central
office, one router and shaped WAN link per branch, clients' links shaped too) and
writes one random package. Then, one system after the other on that network, a
*driver* (``ShoalDriver``, ``HttpDirectDriver``, ``TorrentDriver``):

1. starts the system's origin in the central office and one client process per branch
   host, and waits until every client is running and idle (shoal: registered with its
   P2P server; baselines: their downloader is ready). In shoal, a scenario's lying
   clients get the package first (assigned to their device alone), so that every peer
   meets them; they are marked ``lying`` and left out of the timings;
2. ``start``: the flash crowd. The lab reads the monotonic clock (t0) and the WAN
   counters, then shoal's administrator assigns the package to everyone (the clients
   learn it at their next check-in), or the baselines' trigger file appears;
3. is polled for completions (the monotonic time each client finished, which every
   client reports: shoal's status file, the baselines' result files) while the lab
   injects churn (SIGKILL, restart) when the scenario asks for it;
4. when every client has finished (or the scenario's time is up): WAN counters again,
   the SHA-256 of every client's copy, CPU seconds and peak RSS of every process
   (``ProcessSampler`` reads ``/proc/PID/stat`` and ``VmHWM`` while they run; ``ip netns
   exec`` execs, so a child's PID is the program's), then its processes are stopped.

WAN links are segmented (``segment_wan``): every datagram and TCP segment crosses as
a packet of its own, so the WAN counters count every header, as on a wire, for
shoal (UDP GSO), http-direct (TSO) and libtorrent (no offload) alike.

The results are one row per system with the same fields (``SystemResult``), printed as
a table and written as JSON. The network is torn down at the end whatever happens; a
driver that cannot run (libtorrent not installed) gives a row that says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from shoal.core.errors import ShoalError
from shoal_dev.lab.admin import ConsoleRequestFailed
from shoal_dev.lab.deployment import Deployment, NamespacePlacement, OfficeSetup
from shoal_dev.lab.netns import LabError, list_namespaces, stop_processes
from shoal_dev.lab.network import CENTRAL, EmulatedNetwork, LabHost
from shoal_dev.lab.scenario import MIB, OfficeScenario, Scenario

LAB_PREFIX = "shl-"
LAB_BASE = "10.236"  # not the demo's and end-to-end tests' 10.231: both may run at once
HTTP_PORT = 8080
TORRENT_PORT = 6881
ETHERNET_HEADER = 14
POLL_SECONDS = 0.1
SAMPLE_SECONDS = 0.25
READY_TIMEOUT = 120.0
BAD_PEER_REPORT_WAIT = 6.0
PACKAGE_NAME = "package.bin"

Say = Callable[[str], None]


class LabRunFailed(ShoalError):
    """A lab run could not be set up (the system's processes did not start)."""


# ----------------------------------------------------------------- processes


@dataclass
class _Watched:
    name: str
    role: str
    pid: int
    cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0
    waited_first: float | None = None  # run-queue seconds at the first sample
    waited_last: float = 0.0

    @property
    def run_queue_wait_seconds(self) -> float:
        """How long the process's main thread waited for a CPU while it was followed."""
        return 0.0 if self.waited_first is None else self.waited_last - self.waited_first


class ProcessSampler:
    """CPU seconds and peak RSS of running processes, read from /proc while they run, and
    how long each waited for a CPU (``/proc/PID/schedstat``: its main thread's run-queue
    time, the event loop's for shoal): on a shared machine a process that waits for a
    CPU most of the run measures the machine's load, not its protocol."""

    def __init__(self) -> None:
        self._watched: list[_Watched] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ticks = os.sysconf("SC_CLK_TCK")

    def watch(self, name: str, role: str, pid: int) -> None:
        """Follow ``pid`` (named ``name``, counted under ``role``) until the end."""
        with self._lock:
            self._watched.append(_Watched(name, role, pid))

    def start(self) -> None:
        self.sample()  # the run-queue time so far: waits are counted from here on
        self._thread.start()

    def sample(self) -> None:
        """Read every followed process now (those gone keep their last figures)."""
        with self._lock:
            for entry in self._watched:
                try:
                    stat = Path(f"/proc/{entry.pid}/stat").read_text()
                    status = Path(f"/proc/{entry.pid}/status").read_text()
                except OSError:
                    continue
                # Fields after the command name (which may hold spaces): utime is the
                # 14th field of the line, stime the 15th (proc(5)).
                fields = stat.rsplit(")", 1)[1].split()
                entry.cpu_seconds = (int(fields[11]) + int(fields[12])) / self._ticks
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        entry.peak_rss_bytes = int(line.split()[1]) * 1024
                try:  # on CPU, waiting on a run queue (ns), time slices (sched-stats.rst)
                    waited = int(Path(f"/proc/{entry.pid}/schedstat").read_text().split()[1]) / 1e9
                except (OSError, IndexError, ValueError):
                    continue  # gone, or a kernel without schedstats
                if entry.waited_first is None:
                    entry.waited_first = waited
                entry.waited_last = waited

    def report(self, name: str, cpu_seconds: float, peak_rss_bytes: int) -> None:
        """Figures a process measured itself (at its end, which sampling may miss)."""
        with self._lock:
            for entry in self._watched:
                if entry.name == name:
                    entry.cpu_seconds = max(entry.cpu_seconds, cpu_seconds)
                    entry.peak_rss_bytes = max(entry.peak_rss_bytes, peak_rss_bytes)

    def figures(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "name": entry.name,
                    "role": entry.role,
                    "cpu_seconds": round(entry.cpu_seconds, 2),
                    "peak_rss_bytes": entry.peak_rss_bytes,
                    "run_queue_wait_seconds": round(entry.run_queue_wait_seconds, 2),
                }
                for entry in self._watched
            ]

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# ------------------------------------------------------------------- drivers


@dataclass(frozen=True, slots=True)
class Completion:
    """A client that holds the whole package, as it reported it."""

    completed_monotonic: float
    bytes_from_server: int
    bytes_from_peers: int
    sha256: str | None = None  # computed by the lab from the client's copy when None
    started_monotonic: float | None = None
    """When the client began this download, if it says (shoal's status file does)."""


class Driver(Protocol):
    """One system under test on the lab's network (see the module docstring)."""

    name: str
    chunk_size: int | None
    """The size of the pieces the system moved (shoal: what the console cut), if known."""

    def prepare(self) -> None: ...
    def start(self) -> None: ...
    def completions(self) -> dict[str, Completion]: ...
    def pick_victims(self, hosts: Sequence[LabHost], count: int) -> list[LabHost]: ...
    def kill(self, host: LabHost) -> None: ...
    def restart(self, host: LabHost) -> None: ...
    def copy_of(self, host: LabHost) -> Path | None: ...
    def bad_peers_reported(self, expected: int) -> list[str]: ...
    def timelines(self, t0: float) -> dict[str, list[dict[str, Any]]]: ...
    def close(self) -> None: ...


@dataclass
class _Context:
    """What every driver needs: the network, the package, a work folder, a sampler."""

    network: EmulatedNetwork
    scenario: Scenario
    package: Path
    work: Path
    sampler: ProcessSampler
    say: Say

    @property
    def clients(self) -> list[LabHost]:
        return [
            host
            for office in self.scenario.offices
            for host in self.network.office_hosts(office.name)
        ]

    @property
    def central(self) -> LabHost:
        return self.network.host(f"{CENTRAL}-0")

    def liars(self) -> set[str]:
        """Names of the clients that serve bad chunks (the first of each office)."""
        names = set()
        for office in self.scenario.offices:
            hosts = self.network.office_hosts(office.name)
            names |= {host.name for host in hosts[: self.scenario.corrupt_clients]}
        return names


class ShoalDriver:
    """Console, P2P server and one ``shoal client`` per host; the package is assigned."""

    name = "shoal"

    def __init__(self, context: _Context) -> None:
        self.context = context
        scenario = context.scenario
        self.deployment = Deployment(
            NamespacePlacement(context.network, owns_network=False),
            context.work / "shoal",
            [
                OfficeSetup(spec.name, spec.subnet, office.type)
                for spec, office in zip(context.network.offices, scenario.offices, strict=True)
            ],
            f"{context.network.base}.0.0/24",
            checkin_seconds=1,
            say=lambda line: context.say(f"  {line}"),
            server_arguments=office_links_arguments(context.network.offices, scenario.offices),
        )
        self.version_id = 0
        self.content_id = ""
        self.chunk_size: int | None = None
        self.down: set[str] = set()
        self.restarted_pid: dict[str, int] = {}
        self.before_kill: dict[str, tuple[int, int]] = {}
        self.samples: dict[str, list[dict[str, Any]]] = {}
        self.counters: dict[str, dict[str, Any]] = {}

    def _watch(self, name: str, role: str) -> None:
        self.context.sampler.watch(name, role, self.deployment.processes[name].pid)

    def prepare(self) -> None:
        deployment = self.deployment
        deployment.start_console()
        self._watch("console", "console")
        deployment.configure(seats=self.context.scenario.client_count + 5)
        deployment.start_server()
        self._watch("server", "server")
        deployment.wait_for_server()
        assert deployment.admin is not None
        row = deployment.admin.upload(
            self.context.package,
            "LabPackage",
            "1.0",
            chunk_size=self.context.scenario.chunk_size,
        )
        self.version_id, self.content_id = int(row["id"]), str(row["content_id"])
        self.chunk_size = int(row["chunk_size"])
        time.sleep(2.0)  # the server syncs the new content from the console every second
        liars = self.context.liars()
        for host in self.context.clients:
            deployment.start_clients([host], liars=liars)
            self._watch(f"client-{host.name}", "client")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            deployment.check_alive()
            statuses = [deployment.client_status(host) for host in self.context.clients]
            if all(status and status["registered"] and status["office"] for status in statuses):
                break
            time.sleep(0.2)
        else:
            raise LabRunFailed("the shoal clients did not all register with the P2P server")
        self._seed_liars()

    def _seed_liars(self) -> None:
        """Give the lying clients the package before the crowd starts (see corrupt-peer).

        A liar that holds everything is what every peer finds first; one that is still
        downloading may never be asked. The package is assigned to each liar's device
        alone; its WAN bytes are before the measured window.
        """
        admin = self.deployment.admin
        assert admin is not None
        liars = [host for host in self.context.clients if host.name in self.context.liars()]
        for host in liars:
            status = self.deployment.client_status(host)
            assert status is not None
            deadline = time.monotonic() + READY_TIMEOUT
            while True:  # the console learns of the device from its server's next report
                try:
                    admin.assign(self.version_id, "device", status["device_id"])
                    break
                except ConsoleRequestFailed:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        deadline = time.monotonic() + READY_TIMEOUT
        while any(
            (entry := self._entry(host)) is None or entry["state"] != "complete" for host in liars
        ):
            if time.monotonic() > deadline:
                raise LabRunFailed("the lying clients did not get the package first")
            time.sleep(0.2)

    def start(self) -> None:
        assert self.deployment.admin is not None
        self.deployment.admin.assign(self.version_id)

    def _entry(self, host: LabHost) -> dict[str, Any] | None:
        status = self.deployment.client_status(host)
        if status is None or host.name in self.down:
            return None
        expected_pid = self.restarted_pid.get(host.name)
        if expected_pid is not None and status.get("pid") != expected_pid:
            return None  # still the killed process's last words
        entry = next((d for d in status["downloads"] if d["content_id"] == self.content_id), None)
        if entry is not None:
            self._sample(host, status, entry)
        return entry

    def _sample(self, host: LabHost, status: dict[str, Any], entry: dict[str, Any]) -> None:
        """Keep the client's progress each time its status file changes (every second):
        what a slow cell's timeline is read from."""
        samples = self.samples.setdefault(host.name, [])
        moment = float(status["updated_at"])
        if samples and samples[-1]["t"] >= moment:
            return
        if "counters" in status:  # a running client's (its last words at exit lack them)
            self.counters[host.name] = status["counters"]
        samples.append(
            {
                "t": moment,
                "chunks_done": entry["chunks_done"],
                "bytes_from_server": entry["bytes_from_server"],
                "bytes_from_peers": entry["bytes_from_peers"],
                "bytes_served": status["served"]["bytes"],
                "peers_used": len(entry["peers_used"]),
                "source": entry["source"],
                "state": entry["state"],
            }
        )

    def timelines(self, t0: float) -> dict[str, list[dict[str, Any]]]:
        """Each client's samples, their times in seconds after ``t0`` (the crowd's start);
        the last one also carries the client's counters as it last reported them."""
        timelines = {
            name: [{**sample, "t": round(sample["t"] - t0, 2)} for sample in samples]
            for name, samples in self.samples.items()
        }
        for name, counters in self.counters.items():
            if timelines.get(name):
                timelines[name][-1]["counters"] = counters
        return timelines

    def completions(self) -> dict[str, Completion]:
        self.deployment.check_alive()
        done = {}
        for host in self.context.clients:
            entry = self._entry(host)
            if entry is None or entry["state"] != "complete" or entry["completed_at"] is None:
                continue
            earlier_server, earlier_peers = self.before_kill.get(host.name, (0, 0))
            done[host.name] = Completion(
                float(entry["completed_at"]),
                earlier_server + int(entry["bytes_from_server"]),
                earlier_peers + int(entry["bytes_from_peers"]),
                started_monotonic=float(entry["started_at"]),
            )
        return done

    def pick_victims(self, hosts: Sequence[LabHost], count: int) -> list[LabHost]:
        """The office's rendezvous point (lease granted) first, then the first others."""
        granted = [h for h in hosts if (e := self._entry(h)) and e.get("source") == "granted"]
        rest = [host for host in hosts if host not in granted]
        return (granted + rest)[:count]

    def kill(self, host: LabHost) -> None:
        entry = self._entry(host)
        if entry is not None:
            earlier = self.before_kill.get(host.name, (0, 0))
            self.before_kill[host.name] = (
                earlier[0] + int(entry["bytes_from_server"]),
                earlier[1] + int(entry["bytes_from_peers"]),
            )
        process = self.deployment.processes.pop(f"client-{host.name}")
        self.down.add(host.name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, host: LabHost) -> None:
        self.deployment.start_clients([host], liars=self.context.liars())
        name = f"client-{host.name}"
        self.restarted_pid[host.name] = self.deployment.processes[name].pid
        self.context.sampler.watch(f"{name}#restarted", "client", self.restarted_pid[host.name])
        self.down.discard(host.name)

    def copy_of(self, host: LabHost) -> Path | None:
        return self.deployment.cached_file(host, self.content_id)

    def bad_peers_reported(self, expected: int) -> list[str]:
        """Addresses the clients reported to the P2P server as serving bad chunks.

        Read from the server's metrics listener (``shoal_server_bad_peer_reporters``):
        wait for ``expected`` of them (reports travel with the clients' control
        messages, a few seconds at most).
        """
        deadline = time.monotonic() + (BAD_PEER_REPORT_WAIT if expected else 0)
        while True:
            reported = sorted(self.deployment.bad_peer_reporters())
            if len(reported) >= expected or time.monotonic() > deadline:
                return reported
            time.sleep(0.25)

    def close(self) -> None:
        self.deployment.close()


class _DownloaderDriver:
    """What the two baselines share: an origin process and one downloader per host."""

    name = ""
    port = 0
    chunk_size: int | None = None

    def __init__(self, context: _Context) -> None:
        self.context = context
        self.folder = context.work / self.name
        self.folder.mkdir(parents=True)
        self.trigger = self.folder / "go"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.downloaders: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, list[str]] = {}
        self.down: set[str] = set()
        self.killed: list[subprocess.Popen[bytes]] = []
        self.restarted: set[str] = set()

    def _spawn(
        self, name: str, role: str, host: LabHost, argv: list[str]
    ) -> subprocess.Popen[bytes]:
        process = self.context.network.spawn(host, argv, self.folder / f"{name}.log")
        self.processes.append(process)
        self.context.sampler.watch(name, role, process.pid)
        return process

    def _client_dir(self, host: LabHost) -> Path:
        return self.folder / host.name

    def _result(self, host: LabHost) -> Path:
        return self._client_dir(host) / "result.json"

    def _start_origin(self) -> None:
        raise NotImplementedError

    def _downloader_argv(self, host: LabHost) -> list[str]:
        raise NotImplementedError

    def _wait_port(self, host: LabHost, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError), socket.create_connection((host.address, port), 1):
                return
            time.sleep(0.1)
        raise LabRunFailed(f"{self.name}: the origin did not listen on port {port}")

    def _check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None and process.returncode != 0:
                if any(process is killed for killed in self.killed):
                    continue
                raise LabRunFailed(
                    f"{self.name}: a process exited with {process.returncode}; "
                    f"logs in {self.folder}"
                )

    def prepare(self) -> None:
        self._start_origin()
        for host in self.context.clients:
            self._client_dir(host).mkdir()
            self.argv[host.name] = [
                *_python_module("shoal_dev.lab.baseline_peers"),
                *self._downloader_argv(host),
                "--trigger", str(self.trigger),
                "--ready", str(self._client_dir(host) / "ready"),
                "--result", str(self._result(host)),
            ]  # fmt: skip
            self.downloaders[host.name] = self._spawn(
                f"client-{host.name}", "client", host, self.argv[host.name]
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            if all((self._client_dir(host) / "ready").exists() for host in self.context.clients):
                return
            time.sleep(0.1)
        raise LabRunFailed(f"{self.name}: the downloaders did not all get ready")

    def start(self) -> None:
        self.trigger.touch()

    def completions(self) -> dict[str, Completion]:
        self._check_alive()
        done = {}
        for host in self.context.clients:
            if host.name in self.down:
                continue
            try:
                result = json.loads(self._result(host).read_text())
            except (FileNotFoundError, ValueError):
                continue
            name = f"client-{host.name}"
            if host.name in self.restarted:
                name += "#restarted"
            self.context.sampler.report(name, result["cpu_seconds"], result["peak_rss_bytes"])
            done[host.name] = Completion(
                float(result["completed_monotonic"]),
                int(result["bytes_from_server"]),
                int(result["bytes_from_peers"]),
                str(result["sha256"]),
            )
        return done

    def pick_victims(self, hosts: Sequence[LabHost], count: int) -> list[LabHost]:
        return list(hosts[:count])

    def kill(self, host: LabHost) -> None:
        process = self.downloaders[host.name]
        self.down.add(host.name)
        self.killed.append(process)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, host: LabHost) -> None:
        self.restarted.add(host.name)
        self.downloaders[host.name] = self._spawn(
            f"client-{host.name}#restarted", "client", host, self.argv[host.name]
        )
        self.down.discard(host.name)

    def copy_of(self, host: LabHost) -> Path | None:
        return None  # the downloader hashed its copy itself

    def bad_peers_reported(self, expected: int) -> list[str]:
        return []  # the baselines have no lying peers and no reports

    def timelines(self, t0: float) -> dict[str, list[dict[str, Any]]]:
        return {}  # the baselines report only their end

    def close(self) -> None:
        stop_processes(self.processes)


class HttpDirectDriver(_DownloaderDriver):
    """Every client downloads the package from an HTTP server in the central office."""

    name = "http-direct"

    def __init__(self, context: _Context) -> None:
        super().__init__(context)

    def _start_origin(self) -> None:
        central = self.context.central
        self._spawn(
            "origin",
            "server",
            central,
            [
                *_python_module("shoal_dev.lab.baseline_peers"),
                "http-serve",
                "--file", str(self.context.package),
                "--bind", f"{central.address}:{HTTP_PORT}",
            ],
        )  # fmt: skip
        self._wait_port(central, HTTP_PORT)

    def _downloader_argv(self, host: LabHost) -> list[str]:
        url = f"http://{self.context.central.address}:{HTTP_PORT}/{self.context.package.name}"
        return ["http-get", "--url", url, "--out", str(self._client_dir(host) / PACKAGE_NAME)]


class TorrentDriver(_DownloaderDriver):
    """libtorrent: the central host seeds; clients find each other by LSD, move by uTP."""

    name = "libtorrent"

    def __init__(self, context: _Context) -> None:
        super().__init__(context)
        self.torrent = self.folder / "package.torrent"

    def _start_origin(self) -> None:
        from shoal_dev.bench.utp_peer import make_torrent

        make_torrent(self.context.package, self.torrent)
        central = self.context.central
        self._spawn(
            "origin",
            "server",
            central,
            [
                *_python_module("shoal_dev.lab.baseline_peers"),
                "torrent-seed",
                "--torrent", str(self.torrent),
                "--data-dir", str(self.context.package.parent),
                "--bind", f"{central.address}:{TORRENT_PORT}",
            ],
        )  # fmt: skip
        log = self.folder / "origin.log"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            if log.exists() and "ready" in log.read_text():
                return
            time.sleep(0.1)
        raise LabRunFailed("libtorrent: the seeder did not start")

    def _downloader_argv(self, host: LabHost) -> list[str]:
        return [
            "torrent-get",
            "--torrent", str(self.torrent),
            "--out-dir", str(self._client_dir(host)),
            "--bind", f"{host.address}:{TORRENT_PORT}",
            "--seeder", f"{self.context.central.address}:{TORRENT_PORT}",
        ]  # fmt: skip


def office_links_arguments(specs: Sequence[Any], offices: Sequence[OfficeScenario]) -> list[str]:
    """``--office-links`` for each office (by its name on the server): the lab tells the
    server its links as an administrator would (an unshaped uplink: 100 Gbit/s)."""
    arguments = []
    for spec, office in zip(specs, offices, strict=True):
        uplink = office.client_up_mbit if office.client_up_mbit is not None else 100_000
        arguments += ["--office-links", f"{spec.name}={office.wan_mbit:g}/{uplink:g}"]
    return arguments


def _python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


# ------------------------------------------------------------------- results


def _since(t0: float, moment: float | None) -> float | None:
    return None if moment is None else round(moment - t0, 3)


@dataclass
class ClientResult:
    name: str
    office: str
    completion_s: float | None
    sha256_ok: bool
    bytes_from_server: int
    bytes_from_peers: int
    restarts: int
    lying: bool = False  # fetched before the crowd and served bad chunks: not in the figures
    start_s: float | None = None
    """When the client began its download after t0 (shoal: how fast the assignment
    reached it; after a restart, when the new process resumed). None where the system
    does not say."""


@dataclass
class OfficeResult:
    name: str
    clients: int
    t_last_s: float | None
    lower_bound_s: float  # Kumar-Ross
    t_over_lower_bound: float | None
    one_copy_bound_s: float  # T_lb1: the package crosses the WAN once
    t_over_one_copy_bound: float | None
    binding: str  # which term of T_lb1 binds: "wan", "downlink" or "uplinks"
    wan_bytes_in: int  # Ethernet frames into the office, as the WAN interface counts them
    wan_bytes_out: int
    wan_in_over_package: float
    wan_ip_bytes_in: int  # the same without the Ethernet headers: IP datagrams
    wan_ip_in_over_package: float
    wan_packets_in: int
    churn_bound_s: float | None = None  # T_lbc: T_lb1 with the churned clients' outages
    churn_binding: str = ""  # its binding term: T_lb1's, "rejoin" or "outage"
    t_over_churn_bound: float | None = None


@dataclass
class SystemResult:
    """One row of the results: the same fields for every system."""

    system: str
    status: str  # "ok", "failed" (some client did not finish, or a wrong hash) or "skipped"
    reason: str = ""
    t_first_s: float | None = None
    t_median_s: float | None = None
    t_last_s: float | None = None
    start_last_s: float | None = None  # the last client to begin (None: not reported)
    clients_complete: int = 0
    all_sha256_ok: bool = False
    bytes_from_server: int = 0
    bytes_from_peers: int = 0
    wan_bytes_in: int = 0
    cpu_seconds_total: float = 0.0
    cpu_seconds_per_client: float = 0.0
    run_queue_wait_per_client_s: float = 0.0
    """Seconds each client's event loop waited for a CPU from the crowd's start on
    (mean over the clients): near T_last, the run measured the machine's load."""
    peak_rss_bytes_client_max: int = 0
    peak_rss_bytes_server_max: int = 0
    lying_peers: list[str] = field(default_factory=list)  # clients told to serve bad chunks
    bad_peers_reported: list[str] = field(default_factory=list)  # caught, per the server
    chunk_size: int | None = None  # shoal's chunk size (the console's cut), else None
    offices: list[OfficeResult] = field(default_factory=list)
    clients: list[ClientResult] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per client, its progress as its status file said it (shoal only): seconds after
    the crowd's start, chunks done, bytes from the server and from peers, bytes served."""


DRIVERS: dict[str, Callable[[_Context], Driver]] = {
    "shoal": ShoalDriver,
    "http-direct": HttpDirectDriver,
    "libtorrent": TorrentDriver,
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _run_system(context: _Context, system: str, expected_sha: str) -> SystemResult:
    scenario, network, say = context.scenario, context.network, context.say
    if system == "libtorrent" and importlib.util.find_spec("libtorrent") is None:
        return SystemResult(
            system, "skipped", "libtorrent is not installed (pip install -e ./dev (shoal-dev))"
        )
    context.sampler = sampler = ProcessSampler()
    driver = DRIVERS[system](context)
    say(f"{system}: starting the origin and {scenario.client_count} clients")
    try:
        driver.prepare()
        sampler.start()
        wan_before = {office.name: network.wan_counters(office.name) for office in scenario.offices}
        started = time.monotonic()
        driver.start()
        say(f"{system}: flash crowd started")
        kills = _churn_plan(scenario, started)
        down: dict[str, tuple[LabHost, float]] = {}
        outages: dict[str, list[float]] = {}  # host -> [killed, back] seconds after start
        restarts: dict[str, int] = {}
        done: dict[str, Completion] = {}
        deadline = started + scenario.timeout_s
        reason = ""
        while len(done) < scenario.client_count:
            now = time.monotonic()
            if now > deadline:
                missing = scenario.client_count - len(done)
                reason = f"{missing} clients unfinished after {scenario.timeout_s:.0f} s"
                break
            done = driver.completions()
            for office_name, at in list(kills.items()):
                if now >= at:
                    del kills[office_name]
                    assert scenario.churn is not None
                    hosts = network.office_hosts(office_name)
                    waiting = [host for host in hosts if host.name not in done]
                    for host in driver.pick_victims(waiting, scenario.churn.clients):
                        driver.kill(host)
                        down[host.name] = (host, now + scenario.churn.down_s)
                        outages[host.name] = [now - started, math.inf]
                        restarts[host.name] = restarts.get(host.name, 0) + 1
                        say(f"{system}: killed {host.name} (SIGKILL) at {now - started:.1f} s")
            for name, (host, back) in list(down.items()):
                if now >= back:
                    del down[name]
                    driver.restart(host)
                    outages[name][1] = time.monotonic() - started
                    say(f"{system}: restarted {name} at {now - started:.1f} s")
            time.sleep(POLL_SECONDS)
        wan_after = {office.name: network.wan_counters(office.name) for office in scenario.offices}
        sampler.sample()
        say(f"{system}: {len(done)}/{scenario.client_count} clients complete; checking copies")
        liars = sorted(network.host(name).address for name in context.liars())
        reported = driver.bad_peers_reported(len(liars) if system == "shoal" else 0)
        clients = []
        for office in scenario.offices:
            for host in network.office_hosts(office.name):
                completion = done.get(host.name)
                sha_ok = False
                if completion is not None:
                    sha = completion.sha256
                    if sha is None:
                        copy = driver.copy_of(host)
                        sha = _sha256(copy) if copy is not None and copy.exists() else ""
                    sha_ok = sha == expected_sha
                clients.append(
                    ClientResult(
                        host.name,
                        office.name,
                        None
                        if completion is None
                        else round(completion.completed_monotonic - started, 3),
                        sha_ok,
                        completion.bytes_from_server if completion else 0,
                        completion.bytes_from_peers if completion else 0,
                        restarts.get(host.name, 0),
                        system == "shoal" and host.name in context.liars(),
                        _since(started, completion.started_monotonic if completion else None),
                    )
                )
        result = _summarise(
            system, scenario, clients, wan_before, wan_after, sampler, reason, outages
        )
        result.lying_peers = liars if system == "shoal" else []
        result.bad_peers_reported = reported
        result.chunk_size = driver.chunk_size
        result.timelines = driver.timelines(started)
        return result
    finally:
        driver.close()
        sampler.close()


def _churn_plan(scenario: Scenario, started: float) -> dict[str, float]:
    if scenario.churn is None:
        return {}
    plan: dict[str, float] = {}
    for office in scenario.offices:
        bound = office.lower_bound_seconds(scenario.size_bytes)
        plan[office.name] = started + scenario.churn.at_lower_bound * bound
    return plan


def _summarise(
    system: str,
    scenario: Scenario,
    clients: list[ClientResult],
    wan_before: dict[str, dict[str, int]],
    wan_after: dict[str, dict[str, int]],
    sampler: ProcessSampler,
    reason: str,
    outages: dict[str, list[float]],
) -> SystemResult:
    everyone, clients = clients, [client for client in clients if not client.lying]
    times = sorted(c.completion_s for c in clients if c.completion_s is not None)
    starts = [c.start_s for c in clients if c.start_s is not None and not c.restarts]
    offices = []
    for office in scenario.offices:
        own = [c.completion_s for c in clients if c.office == office.name]
        last = None if None in own or not own else max(c for c in own if c is not None)
        bound = office.lower_bound_seconds(scenario.size_bytes)
        one_copy = office.one_copy(scenario.size_bytes)
        churned = office.churn_bound(
            scenario.size_bytes,
            [
                (at, back)
                for client in everyone
                if client.office == office.name and client.name in outages
                for at, back in [outages[client.name]]
                if back < math.inf  # one never restarted is unfinished: the office failed
            ],
        )
        change = {
            name: wan_after[office.name][name] - wan_before[office.name][name]
            for name in wan_after[office.name]
        }
        wan_ip_in = change["rx_bytes"] - ETHERNET_HEADER * change["rx_packets"]
        offices.append(
            OfficeResult(
                office.name,
                office.clients,
                last,
                round(bound, 3),
                None if last is None else round(last / bound, 3),
                round(one_copy.seconds, 3),
                None if last is None else round(last / one_copy.seconds, 3),
                one_copy.binding,
                change["rx_bytes"],
                change["tx_bytes"],
                round(change["rx_bytes"] / scenario.size_bytes, 4),
                wan_ip_in,
                round(wan_ip_in / scenario.size_bytes, 4),
                change["rx_packets"],
                churn_bound_s=round(churned.seconds, 3),
                churn_binding=churned.binding,
                t_over_churn_bound=None if last is None else round(last / churned.seconds, 3),
            )
        )
    processes = sampler.figures()
    client_rows = [p for p in processes if p["role"] == "client"]
    server_rows = [p for p in processes if p["role"] != "client"]
    complete = sum(1 for c in everyone if c.completion_s is not None)
    all_ok = complete == len(everyone) and all(c.sha256_ok for c in everyone)
    if not reason and not all_ok:
        wrong = [c.name for c in everyone if c.completion_s is not None and not c.sha256_ok]
        reason = f"wrong SHA-256 at {wrong}" if wrong else "some clients did not finish"
    cpu_total = sum(p["cpu_seconds"] for p in processes)
    return SystemResult(
        system=system,
        status="ok" if all_ok else "failed",
        reason=reason,
        t_first_s=times[0] if times else None,
        t_median_s=round(statistics.median(times), 3) if times else None,
        t_last_s=times[-1] if times and len(times) == len(clients) else None,
        start_last_s=max(starts) if starts else None,
        clients_complete=complete,
        all_sha256_ok=all_ok,
        bytes_from_server=sum(c.bytes_from_server for c in clients),
        bytes_from_peers=sum(c.bytes_from_peers for c in clients),
        wan_bytes_in=sum(o.wan_bytes_in for o in offices),
        cpu_seconds_total=round(cpu_total, 2),
        cpu_seconds_per_client=round(
            sum(p["cpu_seconds"] for p in client_rows) / max(len(clients), 1), 2
        ),
        run_queue_wait_per_client_s=round(
            sum(p["run_queue_wait_seconds"] for p in client_rows) / max(len(clients), 1), 2
        ),
        peak_rss_bytes_client_max=max((p["peak_rss_bytes"] for p in client_rows), default=0),
        peak_rss_bytes_server_max=max((p["peak_rss_bytes"] for p in server_rows), default=0),
        offices=offices,
        clients=everyone,
        processes=processes,
    )


def run_scenario(
    scenario: Scenario,
    work: Path,
    say: Say = print,
    prefix: str = LAB_PREFIX,
    seed: int = 1,
    base: str = LAB_BASE,
) -> dict[str, Any]:
    """Build the scenario's network, run every system on it, tear it down; the results.

    ``prefix`` names the namespaces; ``base`` (two octets) the central subnet. Runs at
    the same time need different ones of both.
    """
    if f"{prefix}core" in list_namespaces(prefix):
        raise LabError(
            f"the namespace {prefix}core of an earlier lab run exists; is another run "
            f"going on? If not, `shoal lab clean --prefix {prefix}` removes it"
        )
    work.mkdir(parents=True, exist_ok=True)
    package = work / "origin" / PACKAGE_NAME
    package.parent.mkdir(exist_ok=True)
    expected_sha = _write_package(package, scenario.size_bytes, seed)
    specs = [office.spec(number, base) for number, office in enumerate(scenario.offices, 1)]
    say(
        f"lab {scenario.name}: {len(specs)} offices, {scenario.client_count} clients, "
        f"{scenario.size_mb} MiB package; namespaces {prefix}*"
    )
    document: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "size_bytes": scenario.size_bytes,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "offices": [
            {
                "name": office.name,
                "type": office.type,
                "clients": office.clients,
                "wan_mbit": office.wan_mbit,
                "client_up_mbit": office.client_up_mbit,
                "client_down_mbit": office.client_down_mbit,
                "lower_bound_s": round(office.lower_bound_seconds(scenario.size_bytes), 3),
                "one_copy_bound_s": round(office.one_copy(scenario.size_bytes).seconds, 3),
                "binding": office.one_copy(scenario.size_bytes).binding,
            }
            for office in scenario.offices
        ],
        "churn": asdict(scenario.churn) if scenario.churn else None,
        "corrupt_clients": scenario.corrupt_clients,
        "systems": [],
    }
    with EmulatedNetwork.create(prefix, specs, base=base, segment_wan=True) as network:
        for system in scenario.systems:
            folder = work / system
            shutil.rmtree(folder, ignore_errors=True)
            context = _Context(network, scenario, package, work, ProcessSampler(), say)
            try:
                result = _run_system(context, system, expected_sha)
            except (ShoalError, OSError) as error:
                result = SystemResult(system, "failed", str(error).splitlines()[0][:500])
            document["systems"].append(asdict(result))
            say(f"{system}: {result.status} {result.reason}")
    return document


def _write_package(path: Path, size: int, seed: int) -> str:
    """A random (incompressible) package from ``seed``; its SHA-256."""
    import random

    generator = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as output:
        remaining = size
        while remaining:
            block = generator.randbytes(min(remaining, 1 << 20))
            output.write(block)
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_results(document: dict[str, Any]) -> str:
    """The human table: per system and office, time against both bounds (Kumar-Ross and
    T_lb1, with the term of T_lb1 that binds), WAN bytes."""
    size = document["size_bytes"]
    lines = [
        f"scenario {document['scenario']}: {size / MIB:.0f} MiB package",
        f"{'system':<12} {'office':<8} {'N':>3} {'T_last s':>9} {'T_lb s':>7} {'T/T_lb':>7} "
        f"{'T_lb1 s':>8} {'T/T_lb1':>8} {'binds':<8} {'T_lbc s':>7} {'T/T_lbc':>7} {'binds':<7} "
        f"{'WAN in MiB':>10} {'WAN/F':>6}  {'ok':<4} {'peers MiB':>9} {'server MiB':>10} "
        f"{'CPU s/client':>12} {'RSS MB':>7}",
    ]
    for row in document["systems"]:
        if row["status"] == "skipped":
            lines.append(f"{row['system']:<12} skipped: {row['reason']}")
            continue
        for office in row["offices"] or [None]:
            if office is None:
                lines.append(f"{row['system']:<12} {row['status']}: {row['reason']}")
                continue
            t_last = "-" if office["t_last_s"] is None else f"{office['t_last_s']:.2f}"
            over = office["t_over_lower_bound"]
            ratio = "-" if over is None else f"{over:.2f}"
            over1 = office["t_over_one_copy_bound"]
            ratio1 = "-" if over1 is None else f"{over1:.2f}"
            lines.append(
                f"{row['system']:<12} {office['name']:<8} {office['clients']:>3} {t_last:>9} "
                f"{office['lower_bound_s']:>7.2f} {ratio:>7} "
                f"{office['one_copy_bound_s']:>8.2f} {ratio1:>8} {office['binding']:<8} "
                f"{office.get('churn_bound_s') or office['one_copy_bound_s']:>7.2f} "
                f"{_ratio(office.get('t_over_churn_bound')):>7} "
                f"{office.get('churn_binding') or office['binding']:<7} "
                f"{office['wan_bytes_in'] / MIB:>10.1f} {office['wan_in_over_package']:>6.3f}  "
                f"{'yes' if row['all_sha256_ok'] else 'NO':<4} "
                f"{row['bytes_from_peers'] / MIB:>9.1f} {row['bytes_from_server'] / MIB:>10.1f} "
                f"{row['cpu_seconds_per_client']:>12.2f} "
                f"{row['peak_rss_bytes_client_max'] / 1e6:>7.1f}"
            )
        if row["reason"]:
            lines.append(f"{'':<12} {row['status']}: {row['reason']}")
        if row.get("start_last_s") is not None:
            lines.append(
                f"{'':<12} every client began its download within "
                f"{row['start_last_s']:.2f} s of the assignment"
            )
    return "\n".join(lines)
