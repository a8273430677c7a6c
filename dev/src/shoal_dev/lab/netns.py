"""Network namespaces, veth pairs and HTB shaping, for benchmarks and lab tests.

Everything here shells out to ``ip`` and ``tc`` (iproute2) and needs root. Every name
a caller creates starts with a prefix it owns (``shn-`` for the transfer benchmark), so
``cleanup_prefix`` can remove what a crashed run left behind without touching anything
else on the machine.

Teardown order matters: a namespace lives on while a process runs inside it, so
processes are killed first, then the namespaces are deleted (which deletes the veth
ends inside them and, with them, their peers).

``TwoHostLab`` is the common case: two namespaces joined by one veth pair, used as a
context manager so that the namespaces are gone when the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from shoal.core.errors import ShoalError

MAX_INTERFACE_NAME = 15  # IFNAMSIZ - 1
MIN_PREFIX_LENGTH = 3
PROCESS_STOP_SECONDS = 5.0


class LabError(ShoalError):
    """A namespace, link or shaping command failed, or the lab cannot run here."""


def lab_available() -> tuple[bool, str]:
    """Whether namespaces can be created here, and if not, why (for skip messages)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "iproute2 (the ip command) is not installed"
    return True, ""


def run_ip(*arguments: str, namespace: str | None = None) -> str:
    """Run ``ip ARGUMENTS`` (inside ``namespace`` when given); return its stdout."""
    command = ["ip"]
    if namespace is not None:
        command += ["-n", namespace]
    return _run([*command, *arguments])


def run_tc(*arguments: str, namespace: str | None = None) -> str:
    """Run ``tc ARGUMENTS`` (inside ``namespace`` when given); return its stdout."""
    command = ["tc"] if namespace is None else ["ip", "netns", "exec", namespace, "tc"]
    return _run([*command, *arguments])


def _run(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError as error:
        raise LabError(f"{command[0]} is not installed") from error
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit status {done.returncode}"
        raise LabError(f"{' '.join(command)}: {message}")
    return done.stdout


def check_name(name: str, prefix: str) -> str:
    """Return ``name`` if it starts with ``prefix`` and fits an interface name."""
    if not name.startswith(prefix):
        raise LabError(f"{name!r} does not start with the lab prefix {prefix!r}")
    if len(name) > MAX_INTERFACE_NAME:
        raise LabError(f"{name!r} is longer than {MAX_INTERFACE_NAME} characters")
    return name


def create_namespace(name: str) -> None:
    """Create network namespace ``name`` with its loopback up."""
    run_ip("netns", "add", name)
    try:
        run_ip("link", "set", "lo", "up", namespace=name)
    except LabError:
        delete_namespace(name)
        raise


def list_namespaces(prefix: str = "") -> list[str]:
    """Names of the network namespaces that start with ``prefix``."""
    names = []
    for line in run_ip("netns", "list").splitlines():
        name = line.split(" ", 1)[0].strip()
        if name and name.startswith(prefix):
            names.append(name)
    return names


def namespace_pids(name: str) -> list[int]:
    """Process IDs running inside namespace ``name``."""
    try:
        output = run_ip("netns", "pids", name)
    except LabError:
        return []
    return [int(pid) for pid in output.split() if pid.isdigit()]


def delete_namespace(name: str) -> None:
    """Kill every process in namespace ``name``, then delete it (and its links)."""
    for pid in namespace_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(LabError):
        run_ip("netns", "delete", name)


def create_veth_pair(
    name_a: str, namespace_a: str | None, name_b: str, namespace_b: str | None
) -> None:
    """Create a veth pair and move each end into its namespace (None: stay here)."""
    command = ["link", "add", name_a]
    if namespace_a is not None:
        command += ["netns", namespace_a]
    command += ["type", "veth", "peer", "name", name_b]
    if namespace_b is not None:
        command += ["netns", namespace_b]
    run_ip(*command)


def add_address(device: str, cidr: str, namespace: str | None = None) -> None:
    """Give ``device`` the address ``cidr`` (e.g. ``10.77.0.1/24``) and bring it up."""
    run_ip("address", "add", cidr, "dev", device, namespace=namespace)
    run_ip("link", "set", device, "up", namespace=namespace)


def shape_htb(
    device: str,
    rate_mbit: float,
    namespace: str | None = None,
    *,
    ceil_mbit: float | None = None,
    burst_bytes: int | None = None,
) -> None:
    """Limit egress of ``device`` to ``rate_mbit`` (HTB root qdisc with one class)."""
    run_tc("qdisc", "replace", "dev", device, "root", "handle", "1:", "htb", "default", "10",
           namespace=namespace)  # fmt: skip
    rate = f"{rate_mbit}mbit"
    ceil = f"{ceil_mbit if ceil_mbit is not None else rate_mbit}mbit"
    command = ["class", "add", "dev", device, "parent", "1:", "classid", "1:10", "htb",
               "rate", rate, "ceil", ceil]  # fmt: skip
    if burst_bytes is not None:
        command += ["burst", str(burst_bytes)]
    run_tc(*command, namespace=namespace)


def remove_shaping(device: str, namespace: str | None = None) -> None:
    """Remove any root qdisc from ``device``."""
    with contextlib.suppress(LabError):
        run_tc("qdisc", "del", "dev", device, "root", namespace=namespace)


def list_links(prefix: str, namespace: str | None = None) -> list[str]:
    """Names of the network interfaces that start with ``prefix``."""
    names = []
    for line in run_ip("-o", "link", "show", namespace=namespace).splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(prefix):
                names.append(name)
    return names


def cleanup_prefix(prefix: str) -> list[str]:
    """Remove every namespace and root-namespace link named with ``prefix``.

    For runs that crashed before their own teardown. Returns what was removed.
    """
    if len(prefix) < MIN_PREFIX_LENGTH:
        raise LabError(f"refusing to clean up the short prefix {prefix!r}")
    removed = []
    for name in list_namespaces(prefix):
        delete_namespace(name)
        removed.append(f"netns {name}")
    for name in list_links(prefix):
        with contextlib.suppress(LabError):
            run_ip("link", "delete", name)
            removed.append(f"link {name}")
    return removed


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_orphans(prefix: str) -> list[str]:
    """Remove the namespaces ``PREFIX<pid>a``/``b`` whose owning process is gone.

    ``TwoHostLab`` embeds its creator's process ID in the names, so this removes what a
    killed run left behind and never touches a run still in progress.
    """
    if len(prefix) < MIN_PREFIX_LENGTH:
        raise LabError(f"refusing to clean up the short prefix {prefix!r}")
    removed = []
    for name in list_namespaces(prefix):
        owner = name[len(prefix) : -1]
        if owner.isdigit() and name[-1] in "ab" and not _owner_alive(int(owner)):
            delete_namespace(name)
            removed.append(f"netns {name}")
    return removed


def start_logged(
    argv: Sequence[str], log: Path | None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log`` (discarded without it)."""
    if log is None:
        return subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env
        )
    with open(log, "ab") as output:
        return subprocess.Popen(list(argv), stdout=output, stderr=subprocess.STDOUT, env=env)


def namespace_command(namespace: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``namespace``."""
    return ["ip", "netns", "exec", namespace, *argv]


@dataclass
class Host:
    """One end of a ``TwoHostLab``: its namespace, interface and address."""

    namespace: str
    device: str
    address: str


@dataclass
class TwoHostLab:
    """Two namespaces joined by a veth pair, torn down on exit whatever happens.

    Use as ``with TwoHostLab.create("shn-", "b") as lab:``; processes started with
    ``lab.spawn`` are killed on exit before the namespaces are deleted.
    """

    prefix: str
    left: Host
    right: Host
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def create(cls, prefix: str, tag: str, subnet: str = "10.77.0.0/24") -> TwoHostLab:
        """Create namespaces ``PREFIX TAG PID a`` / ``...b`` joined by a veth pair.

        The veth ends carry the namespaces' names (at most 15 characters).
        """
        stem = f"{prefix}{tag}{os.getpid()}"
        network = ipaddress.ip_network(subnet)
        hosts_iter = network.hosts()
        first, second = next(hosts_iter), next(hosts_iter)
        left = Host(check_name(stem + "a", prefix), check_name(stem + "a", prefix), str(first))
        right = Host(check_name(stem + "b", prefix), check_name(stem + "b", prefix), str(second))
        lab = cls(prefix, left, right)
        try:
            create_namespace(left.namespace)
            create_namespace(right.namespace)
            create_veth_pair(left.device, left.namespace, right.device, right.namespace)
            add_address(left.device, f"{first}/{network.prefixlen}", left.namespace)
            add_address(right.device, f"{second}/{network.prefixlen}", right.namespace)
        except BaseException:
            lab.close()
            raise
        return lab

    @property
    def namespaces(self) -> tuple[str, str]:
        return (self.left.namespace, self.right.namespace)

    def spawn(self, host: Host, argv: Sequence[str], **popen: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s namespace; it is killed when the lab closes."""
        process: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            namespace_command(host.namespace, argv), **popen
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Stop the lab's processes, then delete both namespaces (and the veth pair)."""
        stop_processes(self.processes)
        self.processes.clear()
        for host in (self.left, self.right):
            delete_namespace(host.namespace)

    def __enter__(self) -> TwoHostLab:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def stop_processes(
    processes: Sequence[subprocess.Popen[bytes]], grace_seconds: float = PROCESS_STOP_SECONDS
) -> None:
    """Terminate ``processes`` that still run; kill those that outlive the grace time."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``SystemExit`` so ``finally`` blocks run."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
