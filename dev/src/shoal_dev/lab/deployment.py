"""A whole shoal site as real processes: console, P2P server, clients; driven by a script.

Theory of operation
-------------------
``Deployment`` places processes on *hosts* of a ``Placement``: the namespaces of an
``EmulatedNetwork`` (as root), or addresses on loopback (anyone). It then does what an
administrator does, through the console's REST API:

1. start ``shoal console`` on the central host, log in;
2. upload the topology (Central Office + the lab's offices), save a licence key;
3. start ``shoal server`` on the central host (it registers and is activated), with
   its metrics listener on the management address: the lab reads what it measures of
   the server there (``server_metrics``), never from the server's private database;
4. upload the package and assign it to everyone;
5. start ``shoal client`` on every office host;
6. follow the clients' status files until every one completes, or time runs out.

Every process is stopped, and the namespaces deleted, by ``close`` (or the ``with``
block), whatever happened.
"""

from __future__ import annotations

import compileall
import contextlib
import functools
import hashlib
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

import shoal
import shoal_dev
from shoal.client.service import STATUS_FILE
from shoal.core.errors import ShoalError
from shoal.core.signing import SigningKey
from shoal_dev.lab.admin import ConsoleAdmin
from shoal_dev.lab.netns import start_logged, stop_processes
from shoal_dev.lab.network import CENTRAL, EmulatedNetwork, LabHost

CONSOLE_PORT = 8443
SERVER_METRICS_PORT = 9465
"""Where the lab's P2P server serves ``--metrics``, on the management address."""
ADMIN_PASSWORD = "shoal lab administrator"
PROFILE_VARIABLE = "SHOAL_LAB_CLIENT_PROFILE"
"""A directory: the lab's clients run under cProfile and leave their stats there."""


class DeploymentError(ShoalError):
    """A process of the deployment failed to start or the site did not converge."""


@functools.cache
def compile_sources() -> None:
    """Compile this interpreter's ``shoal`` and ``shoal_dev`` to bytecode, once per process.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (CI's containers, the development machine)
    a module edited since the last ``make bytecode`` is compiled from source again by
    every process the lab starts: CPU an installed client never spends (15-50 ms per
    client for four edited modules, 0.15 s for all of shoal's), counted in its CPU per
    MiB, and only on the side of a comparison whose files changed (docs/network.md,
    "What a client spends before its first datagram"). A checkout it cannot write to is
    left as it is.
    """
    for directory in (*shoal.__path__, *shoal_dev.__path__):
        with contextlib.suppress(OSError):  # read-only: compiled by each process, as before
            compileall.compile_dir(directory, quiet=1)


class Placement(Protocol):
    """Where processes run: hosts with addresses, and how to start a process on one."""

    management_address: str

    def office_hosts(self, office: str) -> list[LabHost]: ...
    def host(self, name: str) -> LabHost: ...
    def spawn(
        self,
        host: LabHost,
        argv: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]: ...
    def close(self) -> None: ...


@dataclass
class NamespacePlacement:
    """Hosts are the namespaces of an emulated network (root only).

    With ``owns_network`` (the default) closing it deletes the whole network; without,
    it stops only the processes it started (several deployments on one lab network).
    """

    network: EmulatedNetwork
    owns_network: bool = True
    management_address: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.management_address = self.network.host(f"{CENTRAL}-0").address

    def office_hosts(self, office: str) -> list[LabHost]:
        return self.network.office_hosts(office)

    def host(self, name: str) -> LabHost:
        return self.network.host(name)

    def spawn(
        self,
        host: LabHost,
        argv: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        process = self.network.spawn(host, argv, log, env)
        self.processes.append(process)
        return process

    def close(self) -> None:
        if self.owns_network:
            self.network.close()
        else:
            stop_processes(self.processes)


@dataclass
class LoopbackPlacement:
    """Hosts are loopback addresses (127.0.0.10 central, 127.0.1.N clients) on this host."""

    clients: int
    office: str = "branch"
    management_address: str = "127.0.0.10"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def office_hosts(self, office: str) -> list[LabHost]:
        if office == CENTRAL:
            return [LabHost(f"{CENTRAL}-0", "", "127.0.0.10", CENTRAL)]
        return [
            LabHost(f"{office}-{index}", "", f"127.0.1.{index + 10}", office)
            for index in range(self.clients)
        ]

    def host(self, name: str) -> LabHost:
        office = name.rsplit("-", 1)[0]
        for host in self.office_hosts(office):
            if host.name == name:
                return host
        raise DeploymentError(f"no host {name!r}")

    def spawn(
        self,
        host: LabHost,
        argv: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        process = start_logged(argv, log, env)
        self.processes.append(process)
        return process

    def close(self) -> None:
        stop_processes(self.processes)


@dataclass(frozen=True, slots=True)
class OfficeSetup:
    """An office of the site as the console's topology knows it."""

    name: str
    subnet: str
    type: str = "Default"


@dataclass
class Deployment:
    """Console, P2P server and clients on a placement; see the module docstring."""

    placement: Placement
    work: Path
    offices: list[OfficeSetup]
    central_subnet: str
    loopback: bool = False
    checkin_seconds: int = 3
    lease_seconds: float = 5.0
    say: Callable[[str], None] = print
    admin: ConsoleAdmin | None = None
    console_host: LabHost | None = None
    enrollment: dict[str, Any] = field(default_factory=dict)
    """The console's enrollment bundle of the P2P server (``wait_for_server`` fetches it)."""
    enrollment_token: str = ""
    """The token the next ``start_clients`` enrolls with (tests set a wrong one)."""
    clients: dict[str, LabHost] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server_arguments: list[str] = field(default_factory=list)
    """More options of ``shoal server run`` (e.g. ``--metrics ADDR:PORT``)."""
    client_command: tuple[str, ...] = ()
    """The client's program (e.g. ``/opt/shoal/client/bin/shoal``: an installed package);
    empty: this interpreter's ``shoal``."""
    client_commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The client's program by host name (each its own installed copy), before
    ``client_command``."""
    server_command: tuple[str, ...] = ()
    """The P2P server's program (an installed copy); empty: this interpreter's ``shoal``."""

    # ------------------------------------------------------------- processes

    def _shoal(self, *arguments: str) -> list[str]:
        compile_sources()
        return [sys.executable, "-m", "shoal", *arguments]

    def _log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def _spawn(
        self, name: str, host: LabHost, argv: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.processes[name] = self.placement.spawn(host, argv, self._log(name), env)

    def check_alive(self) -> None:
        """Raise ``DeploymentError`` (with its log's tail) if a process has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = self._log(name).read_text(errors="replace")[-3000:]
                raise DeploymentError(f"{name} exited with {process.returncode}:\n{tail}")

    @property
    def console_url(self) -> str:
        return f"https://{self.placement.management_address}:{CONSOLE_PORT}"

    @property
    def console_cert(self) -> Path:
        return self.work / "console" / "tls" / "cert.pem"

    @property
    def vendor_key_path(self) -> Path:
        """The site's own vendor key (no key ships with shoal); the console trusts its .pub."""
        return self.work / "vendor.key"

    def _vendor_key(self) -> SigningKey:
        if not self.vendor_key_path.exists():
            key = SigningKey.generate()
            key.save(self.vendor_key_path)
            key.verify_key.save(self.vendor_key_path.with_name("vendor.key.pub"))
        return SigningKey.load(self.vendor_key_path)

    def start_console(self, timeout: float = 90.0) -> ConsoleAdmin:
        self.work.mkdir(parents=True, exist_ok=True)
        self._vendor_key()
        host = self.placement.host(f"{CENTRAL}-0")
        self.console_host = host
        env = {**os.environ, "SHOAL_ADMIN_PASSWORD": ADMIN_PASSWORD}
        self._spawn(
            "console",
            host,
            self._shoal(
                "console",
                "--data-dir",
                str(self.work / "console"),
                "--host",
                host.address,
                "--port",
                str(CONSOLE_PORT),
                "--vendor-public-key",
                str(self.vendor_key_path.with_name("vendor.key.pub")),
                "--log-level",
                "warning",
            ),
            env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.console_cert.exists():
                try:
                    httpx.get(
                        self.console_url + "/api/v1/health",
                        timeout=2,
                        verify=ssl.create_default_context(cafile=self.console_cert),
                    )
                    break
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        else:
            raise DeploymentError(f"the console did not answer within {timeout:.0f} s")
        self.admin = ConsoleAdmin(self.console_url, self.console_cert, "admin", ADMIN_PASSWORD)
        return self.admin

    def configure(self, seats: int) -> None:
        """Topology and licence, as the administrator would set them."""
        assert self.admin is not None
        offices: list[dict[str, Any]] = [
            {
                "office": "Central Office",
                "parent": None,
                "type": "Default",
                "subnets": [self.central_subnet],
            }
        ]
        offices += [
            {
                "office": office.name,
                "parent": "Central Office",
                "type": office.type,
                "subnets": [office.subnet],
            }
            for office in self.offices
        ]
        self.admin.set_topology(offices)
        licence = self.admin.save_licence(
            self._vendor_key(), seats, date.today() + timedelta(days=365)
        )
        self.say(f"licence saved: {licence['seats']} seats ({licence['message']})")

    def start_server(self) -> None:
        assert self.admin is not None and self.console_host is not None
        auth_key = self.admin.server_auth_key()
        host = self.console_host
        self._spawn(
            "server",
            host,
            ([*self.server_command, "server"] if self.server_command else self._shoal("server"))
            + [
                "run",
                "--data-dir",
                str(self.work / "server"),
                "--console",
                self.console_url,
                "--auth-key",
                auth_key,
                "--console-ca",
                str(self.console_cert),
                "--address",
                host.address,
                "--bind",
                host.address,
                "--sync-seconds",
                "1",
                "--report-seconds",
                "2",
                "--checkin-seconds",
                str(self.checkin_seconds),
                "--lease-seconds",
                str(self.lease_seconds),
                "--log-level",
                "info",
                *self._metrics_arguments(),
                *self.server_arguments,
            ],
        )

    def _metrics_arguments(self) -> list[str]:
        if "--metrics" in self.server_arguments:
            return []
        return ["--metrics", f"{self.placement.management_address}:{SERVER_METRICS_PORT}"]

    @property
    def server_metrics_url(self) -> str:
        """The P2P server's Prometheus endpoint (``shoal server run --metrics``)."""
        if "--metrics" in self.server_arguments:
            address = self.server_arguments[self.server_arguments.index("--metrics") + 1]
            return f"http://{address}/metrics"
        return f"http://{self.placement.management_address}:{SERVER_METRICS_PORT}/metrics"

    def server_metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The P2P server's metrics now: family name -> (labels, value) per sample.

        Raises ``DeploymentError`` when the listener does not answer.
        """
        try:
            answer = httpx.get(self.server_metrics_url, timeout=5.0)
            answer.raise_for_status()
        except httpx.HTTPError as error:
            raise DeploymentError(f"{self.server_metrics_url}: {error}") from error
        return {
            family.name: [(dict(sample.labels), sample.value) for sample in family.samples]
            for family in text_string_to_metric_families(answer.text)
        }

    def bad_peer_reporters(self) -> dict[str, int]:
        """Peer IP -> devices that reported it to the P2P server for bad chunks (any
        office), from its ``shoal_server_bad_peer_reporters`` metric."""
        reporters: dict[str, int] = {}
        for labels, value in self.server_metrics().get("shoal_server_bad_peer_reporters", []):
            peer = labels["peer"]
            reporters[peer] = reporters.get(peer, 0) + int(value)
        return reporters

    def wait_for_server(self, timeout: float = 60.0) -> None:
        assert self.admin is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            activated = [row for row in self.admin.get("/servers")["items"] if row["activated"]]
            if activated:
                self.enrollment = self.admin.get(f"/servers/{activated[0]['id']}/enrollment-bundle")
                self.enrollment_token = self.enrollment["enrollment_token"]
                return
            time.sleep(0.3)
        raise DeploymentError(f"the P2P server was not activated within {timeout:.0f} s")

    def upload_and_assign(
        self,
        package: Path,
        name: str = "SampleApp",
        version: str = "1.0",
        install: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        assert self.admin is not None
        row = self.admin.upload(package, name, version, install)
        self.admin.assign(row["id"])
        return row

    def start_clients(
        self,
        hosts: Sequence[LabHost],
        extra_arguments: dict[str, list[str]] | None = None,
        liars: Collection[str] = (),
    ) -> None:
        """Start a client on each host (``extra_arguments`` by host name); the hosts named
        in ``liars`` run ``shoal_dev.lab.lying_client`` (serves corrupted chunks)."""
        assert self.console_host is not None and self.enrollment
        name = hashlib.sha256(self.enrollment_token.encode()).hexdigest()[:8]
        bundle = self.work / f"enrollment-{name}.json"  # the token never in a name
        descriptor = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as output:
            json.dump({**self.enrollment, "enrollment_token": self.enrollment_token}, output)
        for host in hosts:
            command = (
                [sys.executable, "-m", "shoal_dev.lab.lying_client"]
                if host.name in liars
                else [*self.client_commands[host.name], "client", "run"]
                if host.name in self.client_commands
                else [*self.client_command, "client", "run"]
                if self.client_command
                else self._profiled_shoal(host) or self._shoal("client", "run")
            )
            argv = [
                *command,
                "--data-dir",
                str(self.client_dir(host)),
                "--enrollment",
                str(bundle),
                "--server",
                self.console_host.address,
                "--ip",
                host.address,
                "--prefix",
                "24",
                "--hostname",
                host.name,
            ]
            if self.loopback:
                argv.append("--bind-ip")
            argv += (extra_arguments or {}).get(host.name, [])
            self._spawn(f"client-{host.name}", host, argv)
            self.clients[host.name] = host

    def _profiled_shoal(self, host: LabHost) -> list[str]:
        """``shoal client run`` under cProfile (``shoal_dev.lab.profiled``) when
        ``SHOAL_LAB_CLIENT_PROFILE`` names a directory (the lab's profiling only, never a
        product option): the stats go to ``DIR/client-HOST.prof`` when the client stops;
        empty when unset."""
        directory = os.environ.get(PROFILE_VARIABLE)
        if not directory:
            return []
        Path(directory).mkdir(parents=True, exist_ok=True)
        output = Path(directory) / f"client-{host.name}.prof"
        return [sys.executable, "-m", "shoal_dev.lab.profiled", str(output), "client", "run"]

    def client_dir(self, host: LabHost) -> Path:
        return self.work / f"client-{host.name}"

    def client_status(self, host: LabHost) -> dict[str, Any] | None:
        try:
            status: dict[str, Any] = json.loads((self.client_dir(host) / STATUS_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return status

    def wait_for_clients(
        self,
        content_id: str,
        timeout: float,
        on_progress: Callable[[dict[str, dict[str, Any] | None]], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Until every client holds ``content_id`` complete; return their statuses."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            statuses = {name: self.client_status(host) for name, host in self.clients.items()}
            if on_progress is not None:
                on_progress(statuses)
            done = {
                name: status
                for name, status in statuses.items()
                if status is not None
                and any(
                    d["content_id"] == content_id and d["state"] == "complete"
                    for d in status["downloads"]
                )
            }
            if len(done) == len(self.clients):
                return done
            if time.monotonic() > deadline:
                missing = sorted(set(self.clients) - set(done))
                raise DeploymentError(
                    f"{len(missing)} clients did not complete in {timeout:.0f} s: {missing}"
                )
            time.sleep(0.25)

    def wait_for_installs(
        self,
        application: str,
        final_states: Collection[str],
        timeout: float,
        on_progress: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Until the console shows ``application`` in one of ``final_states`` on every
        client; return the console's rows (``GET /api/v1/installs``)."""
        assert self.admin is not None
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            rows = self.admin.installs(application=application)
            if on_progress is not None:
                on_progress(rows)
            if len(rows) >= len(self.clients) and all(row["state"] in final_states for row in rows):
                return rows
            if time.monotonic() > deadline:
                states = sorted(f"{row['hostname']}: {row['state']}" for row in rows)
                raise DeploymentError(
                    f"{application} not {'/'.join(final_states)} on every client in "
                    f"{timeout:.0f} s: {states}"
                )
            time.sleep(0.5)

    def cached_file(self, host: LabHost, content_id: str) -> Path:
        return self.client_dir(host) / "cache" / f"{content_id}.data"

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
        self.placement.close()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
