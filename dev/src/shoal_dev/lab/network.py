"""An emulated enterprise network in namespaces: offices behind shaped WAN links.

Theory of operation
-------------------
Built from a list of ``LabOffice``, with every name starting with the lab's prefix::

    central office hosts --- bridge "lan" in the CORE namespace (10.231.0.1/24)
                                       |  wan<N> (veth, HTB egress at the office rate)
    office N hosts --- bridge "lan" in ROUTER N (10.231.N.1/24) --- wan (veth, HTB)
    this namespace --- PREFIX + "m" (veth, 10.231.0.254) --- the core bridge

(10.231 is the default ``base``; a lab that runs beside another picks its own.)

The management link lets the process that built the lab (a test, the demo) reach the
console's HTTPS API on a central host; it disappears with the core namespace.

Each host is a namespace of its own with ``eth0`` on its office bridge and a default
route through the office router; routers forward, so every host reaches every other.
Traffic inside an office stays on its bridge; traffic between offices crosses the
office's WAN veth, whose byte counters (``wan_bytes``) are what "bytes over the WAN
link" means. Both ends of a WAN link are shaped by HTB, so the link has the office's
rate in both directions.

``close`` kills every process started in the lab's namespaces and deletes the
namespaces (and so every veth and bridge in them); it runs whatever happened, and
``cleanup_prefix`` removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from shoal_dev.lab.netns import (
    LabError,
    add_address,
    create_namespace,
    create_veth_pair,
    delete_namespace,
    namespace_command,
    run_ip,
    shape_htb,
    start_logged,
    stop_processes,
)

CENTRAL = "central"
BASE = "10.231"  # the lab's addresses: BASE.<office number>.<host>


@dataclass(frozen=True, slots=True)
class LabOffice:
    """An office of network namespaces: how many hosts, its WAN rate, its number (second
    octet).

    Real hosts, rates in Mbit/s, addresses from its number; the simulator's modelled
    office (bytes/s, RTT, queue depth, topology type) is ``shoal_dev.sim.enterprise.SimOffice``:
    the two describe different things and share no field's meaning, hence two types.

    ``client_up_mbit`` / ``client_down_mbit``, when given, shape each host's link to the
    office bridge (HTB on the host's ``eth0`` and on its bridge port): a device's uplink
    and downlink, which the Kumar-Ross lower bound of the lab needs.
    """

    name: str
    number: int
    hosts: int
    wan_mbit: float = 50.0
    client_up_mbit: float | None = None
    client_down_mbit: float | None = None
    base: str = BASE

    @property
    def subnet(self) -> str:
        return f"{self.base}.{self.number}.0/24"

    @property
    def gateway(self) -> str:
        return f"{self.base}.{self.number}.1"

    def host_address(self, index: int) -> str:
        return f"{self.base}.{self.number}.{index + 10}"


@dataclass(slots=True)
class LabHost:
    """One emulated device: its namespace and address."""

    name: str
    namespace: str
    address: str
    office: str


@dataclass
class EmulatedNetwork:
    """The namespaces of one lab run; use as a context manager.

    ``base`` is the first two octets of the central subnet and of the management
    address; two labs that run at the same time need different ones, since both put
    a management address and a route into this (the root) namespace.

    ``segment_wan`` makes both ends of every WAN link send one packet per datagram or
    TCP segment (``gso_max_segs 1``), as a real WAN does. Without it a sender's UDP GSO
    or TSO batch crosses the veth as one large packet, and the interface counters
    count its IP/UDP headers once: WAN bytes then look ~2-3% smaller than on a wire.
    """

    prefix: str
    offices: list[LabOffice]
    central_hosts: int = 1
    base: str = BASE
    segment_wan: bool = False
    hosts: dict[str, LabHost] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        prefix: str,
        offices: Sequence[LabOffice],
        central_hosts: int = 1,
        base: str = BASE,
        segment_wan: bool = False,
    ) -> EmulatedNetwork:
        lab = cls(prefix, list(offices), central_hosts, base=base, segment_wan=segment_wan)
        try:
            lab._build()
        except BaseException:
            lab.close()
            raise
        return lab

    # ------------------------------------------------------------- building

    def _namespace(self, suffix: str) -> str:
        name = f"{self.prefix}{suffix}"
        create_namespace(name)
        self.namespaces.append(name)
        return name

    def _bridge(self, namespace: str, gateway_cidr: str) -> None:
        run_ip("link", "add", "name", "lan", "type", "bridge", namespace=namespace)
        add_address("lan", gateway_cidr, namespace=namespace)

    def _attach_host(
        self,
        office: str,
        number: int,
        router: str,
        index: int,
        address: str,
        gateway: str,
        up_mbit: float | None = None,
        down_mbit: float | None = None,
    ) -> LabHost:
        name = f"{office}-{index}"
        namespace = self._namespace(f"h{number}x{index}")
        port = f"p{index}"
        create_veth_pair("eth0", namespace, port, router)
        run_ip("link", "set", port, "master", "lan", namespace=router)
        run_ip("link", "set", port, "up", namespace=router)
        add_address("eth0", f"{address}/24", namespace=namespace)
        run_ip("route", "add", "default", "via", gateway, namespace=namespace)
        if up_mbit is not None:
            shape_htb("eth0", up_mbit, namespace=namespace)
        if down_mbit is not None:
            shape_htb(port, down_mbit, namespace=router)
        host = LabHost(name, namespace, address, office)
        self.hosts[name] = host
        return host

    def _build(self) -> None:
        core = self._namespace("core")
        _forwarding(core)
        self._bridge(core, f"{self.base}.0.1/24")
        management = f"{self.prefix}m"
        create_veth_pair(management, None, "mgmt", core)
        run_ip("link", "set", "mgmt", "master", "lan", namespace=core)
        run_ip("link", "set", "mgmt", "up", namespace=core)
        add_address(management, f"{self.base}.0.254/24")
        for index in range(self.central_hosts):
            self._attach_host(
                CENTRAL, 0, core, index, f"{self.base}.0.{index + 10}", f"{self.base}.0.1"
            )
        for office in self.offices:
            router = self._namespace(f"r{office.number}")
            _forwarding(router)
            self._bridge(router, f"{office.gateway}/24")
            core_end = f"wan{office.number}"
            create_veth_pair(core_end, core, "wan", router)
            add_address(core_end, f"172.31.{office.number}.1/30", namespace=core)
            add_address("wan", f"172.31.{office.number}.2/30", namespace=router)
            run_ip(
                "route", "add", office.subnet, "via", f"172.31.{office.number}.2", namespace=core
            )
            run_ip("route", "add", "default", "via", f"172.31.{office.number}.1", namespace=router)
            shape_htb(core_end, office.wan_mbit, namespace=core)
            shape_htb("wan", office.wan_mbit, namespace=router)
            if self.segment_wan:
                run_ip("link", "set", "dev", core_end, "gso_max_segs", "1", namespace=core)
                run_ip("link", "set", "dev", "wan", "gso_max_segs", "1", namespace=router)
            for index in range(office.hosts):
                self._attach_host(
                    office.name,
                    office.number,
                    router,
                    index,
                    office.host_address(index),
                    office.gateway,
                    office.client_up_mbit,
                    office.client_down_mbit,
                )

    # -------------------------------------------------------------- running

    def host(self, name: str) -> LabHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no host {name!r} in this lab") from None

    def office_hosts(self, office: str) -> list[LabHost]:
        return [host for host in self.hosts.values() if host.office == office]

    def spawn(
        self,
        host: LabHost,
        argv: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s namespace; it is killed at ``close``."""
        process = start_logged(namespace_command(host.namespace, argv), log, env)
        self.processes.append(process)
        return process

    def wan_bytes(self, office: str) -> tuple[int, int]:
        """Bytes (into the office, out of it) that crossed its WAN link so far."""
        counters = self.wan_counters(office)
        return counters["rx_bytes"], counters["tx_bytes"]

    def wan_counters(self, office: str) -> dict[str, int]:
        """The office router's WAN interface counters: ``rx_``/``tx_`` ``bytes``/``packets``.

        ``rx`` is into the office. Bytes are Ethernet frames as the interface counts
        them (14 bytes of header per packet more than the IP datagrams).
        """
        spec = next((o for o in self.offices if o.name == office), None)
        if spec is None:
            raise LabError(f"no office {office!r} with a WAN link in this lab")
        router = f"{self.prefix}r{spec.number}"
        names = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
        statistics = Path("/sys/class/net/wan/statistics")
        read = subprocess.run(
            namespace_command(router, ["cat", *(str(statistics / name) for name in names)]),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return {name: int(value) for name, value in zip(names, read, strict=True)}

    def close(self) -> None:
        """Kill every process, delete every namespace (and with them every link)."""
        stop_processes(self.processes)
        with contextlib.suppress(LabError):
            run_ip("link", "delete", f"{self.prefix}m")
        for namespace in reversed(self.namespaces):
            with contextlib.suppress(LabError):
                delete_namespace(namespace)
        self.namespaces.clear()

    def __enter__(self) -> EmulatedNetwork:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _forwarding(namespace: str) -> None:
    subprocess.run(
        namespace_command(namespace, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
        check=True,
        capture_output=True,
    )
