"""A simulated enterprise: a P2P server in the central office, offices of clients.

Real sans-I/O machines (``AgentCore``, ``ServerNode``) and real content stores run on
``SimNetwork``'s virtual clock, so swarm behaviour (WAN bytes per office, rendezvous
takeover, bans) is tested at scale on one core without sockets.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shoal.assignments import DOCUMENT_FORMAT, encode_envelope, manifest_ref, sign_assignments
from shoal.client.agent import AgentConfig, AgentCore, ContentStoreLike, DownloadState
from shoal.client.trust import TrustState
from shoal.core.bounds import Bound, kumar_ross_bound, one_copy_bound
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import Manifest, decode_manifest_file
from shoal.core.packing import pack_bytes
from shoal.core.server_cert import issue_certificate
from shoal.core.signing import SigningKey
from shoal.net.pump import Application
from shoal.protocol.transfer import Mode
from shoal.server.core import BandwidthLimit, ServerCore, ServerSettings
from shoal.server.limits import AbuseLimits
from shoal.server.node import ServerNode
from shoal.server.state_store import RowState, restored_record, row_state
from shoal.server.stripe_plan import OfficeLinks
from shoal.store.content_store import ContentStore
from shoal.topology import parse_json
from shoal_dev.sim.disk import DiskShell
from shoal_dev.sim.flows import FlowFabric, HashMemo
from shoal_dev.sim.memstore import MemoryStore
from shoal_dev.sim.network import Host, SimNetwork

MODES = ("packet", "flow")
"""How chunks move: datagram by datagram (``TransferEngine``), or as max-min fair flows
(``FlowEngine``, ``flows.py``); the agents and server are the same in both."""

SERVER_IP = "10.0.0.2"
SERVER_ID = "5e7e0000000000000000000000000001"
ENROLLMENT_TOKEN = b"simulated token!"
SIM_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""The wall-clock time at virtual time 0 (documents and certificates expire by it)."""
DOCUMENT_VALIDITY = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class SimOffice:
    """A simulated office: its clients, subnet, topology type and modelled links (rates
    in bytes/s). The lab's office of network namespaces
    with real hosts is ``shoal_dev.lab.network.LabOffice``, a different thing."""

    name: str
    subnet: str
    clients: int
    wan_rate: float = 2e6
    type: str = "Default"
    in_topology: bool = True
    nic_rate: float = 125e6
    """Each client's NIC, bytes/s each way (default 1 Gbit/s)."""
    client_up_rate: float | None = None
    """Each client's uplink in bytes/s, when it is not ``nic_rate`` (asymmetric links)."""
    client_down_rate: float | None = None
    """Each client's downlink in bytes/s, when it is not ``nic_rate``."""
    wan_rtt: float | None = None
    """Round trip between the office's router and the central office's, in seconds
    (half of it each way on the office's WAN link; default 20 ms)."""
    buffer_seconds: float | None = None
    """Queue depth of every link of the office (WAN and clients' links), in seconds of
    traffic at the link's rate (default 0.25 s)."""
    disk_seconds: float = 0.0
    """How long each client's disk takes per batch of writes (``shoal_dev.sim.disk``);
    0: the agents store their chunks inline, at once."""
    loss: float = 0.0
    """Random loss on every link of the office (its WAN and its clients' links), as a
    fraction of datagrams, whatever the queue."""

    @property
    def up_rate(self) -> float:
        """Each client's uplink, bytes/s."""
        return self.nic_rate if self.client_up_rate is None else self.client_up_rate

    @property
    def down_rate(self) -> float:
        """Each client's downlink, bytes/s."""
        return self.nic_rate if self.client_down_rate is None else self.client_down_rate

    def one_copy_bound(self, package_bytes: int) -> Bound:
        """``T_lb1`` of this office for a package of ``package_bytes``."""
        return one_copy_bound(
            package_bytes,
            self.wan_rate * 8,
            [self.up_rate * 8] * self.clients,
            self.down_rate * 8,
            shares=self.type != "VPN",
        )

    def kumar_ross_bound(self, package_bytes: int) -> Bound:
        """Kumar-Ross's bound for this office and a package of ``package_bytes``."""
        return kumar_ross_bound(
            package_bytes,
            self.wan_rate * 8,
            [self.up_rate * 8] * self.clients,
            self.down_rate * 8,
            shares=self.type != "VPN",
        )


@dataclass(slots=True)
class SimClient:
    host: Host
    agent: AgentCore
    store: ContentStoreLike
    office: str
    earlier_from_server: int = 0
    """Bytes the client's earlier processes (before a restart) received from the server:
    a restarted agent's download counts from zero again."""
    earlier_from_peers: int = 0
    """Likewise, from its peers."""
    disk_seconds: float = 0.0
    """Its disk's time per batch of writes (``SimOffice.disk_seconds``)."""


def _client_complete(client: SimClient, content_id: ContentId) -> bool:
    """Complete, or not counted (its host is down)."""
    if not client.host.alive:
        return True
    download = client.agent.downloads.get(content_id)
    return download is not None and download.state is DownloadState.COMPLETE


@dataclass(slots=True)
class Enterprise:
    network: SimNetwork
    server: ServerNode
    clients: list[SimClient]
    manifest: Manifest
    package: bytes
    console_key: SigningKey
    started: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    document_sequence: int = 0
    fabric: FlowFabric | None = None
    """The flow model, in flow mode (None: packet mode)."""
    make_server: Callable[[], ServerNode] | None = None
    """A new server process with what the server keeps across a restart."""
    saved_leases: tuple[dict[str, Any], float] | None = None
    saved_registry: list[RowState] = field(default_factory=list)
    """The leases and delivery ledger the server's state store holds, and when saved."""
    manifest_file: bytes = b""
    """The signed manifest file the server relays (the document names its blob)."""
    first_pending: int = 0
    """The client ``all_complete`` found incomplete last (a hint: asked first)."""

    def signed_assignments(self, assignments: list[dict[str, Any]]) -> bytes:
        """The next assignment document (a new sequence, valid for a week of virtual
        time from now), signed by the console key, as the server relays it."""
        self.document_sequence += 1
        return sim_document(self.console_key, assignments, self.document_sequence, self.network.now)

    @property
    def content_id(self) -> ContentId:
        return self.manifest.content_id

    def download_of(self, client: SimClient):  # type: ignore[no-untyped-def]
        return client.agent.downloads.get(self.content_id)

    def received(self, client: SimClient) -> tuple[int, int]:
        """Bytes of the content the client received (from the server, from its peers),
        over every process it ran (restarts included)."""
        download = self.download_of(client)
        from_server, from_peers = client.earlier_from_server, client.earlier_from_peers
        if download is not None:
            from_server += download.bytes_from_server
            from_peers += download.bytes_from_peers
        return from_server, from_peers

    def complete(self, client: SimClient) -> bool:
        download = self.download_of(client)
        return download is not None and download.state is DownloadState.COMPLETE

    def all_complete(self) -> bool:
        """Has every live client its download complete? (The stop test of most runs,
        asked after every event: the client that failed it last time is asked first.)"""
        clients = self.clients
        content_id = self.content_id
        first = self.first_pending
        if first < len(clients) and not _client_complete(clients[first], content_id):
            return False
        for index, client in enumerate(clients):
            if not _client_complete(client, content_id):
                self.first_pending = index
                return False
        return True

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> float:
        return self.network.run(until, stop)

    def wan_bytes_down(self, office: str) -> int:
        return self.network.offices[office].wan_down.bytes_sent

    def kill(self, client: SimClient) -> None:
        """The client's process dies (in flow mode, its flows end with it)."""
        if self.fabric is not None:
            self.fabric.kill(client.host)
        else:
            self.network.kill(client.host)

    def server_host(self) -> Host:
        return self.network.hosts[SERVER_IP]

    def kill_server(self) -> None:
        """The P2P server's process dies. Its state store keeps the rendezvous leases,
        the delivery ledger and the rows of the devices that registered (``StateSaver``
        saves them within ``LEASE_SAVE_SECONDS``, 1 s; here as they are when it dies)."""
        now = self.network.now
        self.saved_leases = (self.server.core.wan_copy.lease_state(now), now)
        self.saved_registry = [row_state(record) for record in self.server.core.clients.values()]
        if self.fabric is not None:
            self.fabric.kill(self.server_host())
        else:
            self.network.kill(self.server_host())

    def restart_server(self) -> None:
        """The P2P server starts again with its saved registry and leases, as
        ``ServerService`` does: its devices are known at once (a device's check-in
        progress and counter are as they were when it died, where a real server's are
        up to ``report_seconds`` older)."""
        assert self.make_server is not None
        self.server = self.make_server()
        for state in self.saved_registry:
            self.server.core.restore_client(restored_record(state, self.network.now))
        if self.saved_leases is not None:
            saved, saved_at = self.saved_leases
            now = self.network.now
            self.server.core.wan_copy.restore_lease_state(saved, now, now - saved_at)
        self.network.restart(self.server_host(), self.server.bindings(), self.server)

    def restart(self, client: SimClient) -> None:
        """The client's process starts again: a new agent on the same cache, with the
        assignment document its earlier process accepted, as the shell keeps it on disk
        (``shoal.client.kept_assignments``; what that process received is kept in
        ``SimClient.earlier_from_*``)."""
        old = client.agent
        download = old.downloads.get(self.content_id)
        if download is not None:
            client.earlier_from_server += download.bytes_from_server
            client.earlier_from_peers += download.bytes_from_peers
        agent = AgentCore(
            old.config, client.store, self.network.now, rng=random.Random(old.rng.random())
        )
        agent.assignments.kept = old.assignments.document
        agent.registrar.kept = old.registrar.registered or old.registrar.kept
        if self.fabric is not None:
            use_flow_engines(self.fabric, client.host, agent.engines, agent.bindings())
        shell = _shell(self.network, client.host, agent, client.disk_seconds)
        self.network.restart(client.host, agent.bindings(), shell)
        client.agent = agent


def _shell(network: SimNetwork, host: Host, agent: AgentCore, disk_seconds: float) -> Application:
    """What runs ``agent`` on ``host``: itself (its disk inline), or a ``DiskShell``."""
    return DiskShell(network, host, agent, disk_seconds) if disk_seconds > 0 else agent


def sim_document(
    key: SigningKey, assignments: list[dict[str, Any]], sequence: int, now: float
) -> bytes:
    """A signed assignment envelope as the console makes it, at virtual time ``now``."""
    signed_at = SIM_EPOCH + timedelta(seconds=now)
    document = {
        "format": DOCUMENT_FORMAT,
        "sequence": sequence,
        "generated_at": signed_at.isoformat(),
        "expires": (signed_at + DOCUMENT_VALIDITY).isoformat(),
        "assignments": assignments,
    }
    return encode_envelope(sign_assignments(key, document))


def _links_of(spec: SimOffice) -> OfficeLinks:
    """The office's link profile as an administrator would give it to the server."""
    return OfficeLinks(spec.wan_rate * 8 / 1e6, spec.up_rate * 8 / 1e6)


PACKAGE_PIECE = 64 * 1024 * 1024
"""Bytes drawn per call when making a package: ``randbytes`` of 256 MiB or more asks
``getrandbits`` for 2**31 bits or more, past a C int."""


def random_package(rng: random.Random, size: int) -> bytes:
    """``size`` random bytes from ``rng``: the bytes of ``rng.randbytes(size)`` and the
    same state after, drawn a piece at a time (a whole number of the generator's 32-bit
    words per piece, so the pieces join up as one call's bytes would)."""
    pieces = [rng.randbytes(PACKAGE_PIECE) for _ in range(size // PACKAGE_PIECE)]
    pieces.append(rng.randbytes(size % PACKAGE_PIECE))
    return b"".join(pieces)


def build_enterprise(
    root: Path,
    offices: list[SimOffice],
    *,
    package_size: int = 4 * 1024 * 1024,
    chunk_size: int = 65536,
    seed: int = 1,
    checkin_seconds: int = 2,
    lease_seconds: float = 3.0,
    store_factory: Callable[[Path, int], ContentStoreLike] | None = None,
    bandwidth: dict[str, BandwidthLimit] | None = None,
    swarm_fanout: int = 1,
    limits: AbuseLimits | None = None,
    console_key: SigningKey | None = None,
    content: tuple[bytes, bytes] | None = None,
    assignments: bytes | None = None,
    device_keys: Sequence[DeviceKey] = (),
    mode: str = "packet",
    origin_rate: float = 125e6,
    hashes: HashMemo | None = None,
    link_profiles: bool = False,
) -> Enterprise:
    """Build the network, the server (content imported, assigned to everyone), clients.

        Or, from a console: ``content`` (its signed manifest file and the bytes it serves),
        ``assignments`` (its signed envelope) and ``console_key``; ``device_keys`` give the
        first clients their keys (and device IDs), in office order.

        ``mode`` "flow" binds every data port to a ``FlowEngine`` of one ``FlowFabric`` and
        keeps every cache in memory (``MemoryStore``: chunks shared by reference);
        ``origin_rate`` is the server's NIC and the central office's WAN link, bytes/s each
        way (``math.inf``: an origin that never limits). ``hashes`` is the flow model's
    ``HashMemo`` (give it when ``store_factory`` makes ``MemoryStore``s).
    ``link_profiles``: the server is told each office's WAN and client uplink rates
    (``--office-links``), which decide how many stripes its WAN copy is split in.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    rng = random.Random(seed)
    network = SimNetwork(seed=seed)
    fabric = FlowFabric(network, hashes=hashes) if mode == "flow" else None
    if fabric is not None and store_factory is None:
        hashes = fabric.hashes
        store_factory = lambda _directory, _number: MemoryStore(hashes)  # noqa: E731
    console_key = console_key or SigningKey.generate()
    if content is not None:
        manifest_file, package = content
        manifest = decode_manifest_file(manifest_file).manifest
        chunk_size = manifest.chunk_size
    else:
        package = random_package(rng, package_size)
        manifest = pack_bytes(package, chunk_size)
        manifest_file = console_key.sign(manifest).encode()

    topology = [
        {"office": "Central Office", "parent": None, "type": "Default", "subnets": ["10.0.0.0/24"]}
    ]
    topology += [
        {
            "office": spec.name,
            "parent": "Central Office",
            "type": spec.type,
            "subnets": [spec.subnet],
        }
        for spec in offices
        if spec.in_topology
    ]
    server_identity = DeviceKey.from_raw(rng.randbytes(32))
    settings = ServerSettings(
        enrollment_token=ENROLLMENT_TOKEN,
        identity=server_identity,
        checkin_seconds=checkin_seconds,
        lease_seconds=lease_seconds,
        bandwidth=bandwidth or {},
        office_links={spec.name: _links_of(spec) for spec in offices} if link_profiles else {},
        limits=limits or AbuseLimits(),
    )
    trust = TrustState((console_key.verify_key.raw,))
    everyone = {
        "id": 1,
        "content_id": manifest.content_id.hex,
        "target_kind": "everyone",
        "target": None,
        "offices": None,
        "background": False,
        "manifest": manifest_ref(manifest_file).entry(),  # as the console names it
    }
    document = assignments or sim_document(console_key, [everyone], 1, network.now)

    def make_core() -> ServerCore:
        """The server's state from what it keeps across a restart (settings, certificate,
        topology, licence, content, assignments); its clients register again."""
        core = ServerCore(settings)
        core.certificate = issue_certificate(
            console_key,
            server_identity.public_raw,
            SERVER_ID,
            SERVER_IP,
            "sim",
            SIM_EPOCH.timestamp(),
        )
        core.topology = parse_json({"offices": topology})
        core.licence.active = True
        core.add_manifest(manifest_file)
        core.set_assignments(document)
        return core

    origin: Any = (
        ContentStore(root / "server-origin", durable=False)
        if fabric is None and hashes is None
        else MemoryStore(fabric.hashes if fabric is not None else hashes or HashMemo())
    )
    origin_entry = origin.add(manifest_file, pinned=True)
    for chunk_index in range(manifest.chunk_count):
        start = chunk_index * chunk_size
        origin.write_chunk(
            origin_entry.content_id, chunk_index, package[start : start + chunk_size]
        )
    central = network.add_office(
        "Central Office", "10.0.0.0/24", wan_rate=origin_rate, wan_delay=0.001
    )
    server_host = network.add_host(central, SERVER_IP, nic_rate=origin_rate)

    def make_server() -> ServerNode:
        server = ServerNode(make_core(), origin, network.now)
        if fabric is not None:
            use_flow_engines(fabric, server_host, server.engines, server.bindings())
        return server

    server = make_server()
    for port, machine in server.bindings().items():
        network.bind(server_host, port, machine)
    network.attach(server_host, server)

    clients: list[SimClient] = []
    keys = iter(device_keys)
    for spec in offices:
        links: dict[str, float] = {}
        if spec.wan_rtt is not None:
            links["wan_delay"] = spec.wan_rtt / 2
        if spec.buffer_seconds is not None:
            links["buffer_seconds"] = spec.buffer_seconds
        office = network.add_office(
            spec.name, spec.subnet, wan_rate=spec.wan_rate, wan_loss=spec.loss, **links
        )
        hosts = ipaddress.ip_network(spec.subnet).hosts()
        for number in range(spec.clients):
            ip = str(next(hosts))
            device_key = next(keys, None) or DeviceKey.from_raw(rng.randbytes(32))
            directory = root / f"client-{ip}"
            store = (
                store_factory(directory, number)
                if store_factory is not None
                else ContentStore(directory, durable=False)
            )
            config = AgentConfig(
                device_key=device_key,
                hostname=f"pc-{ip}",
                ip=ip,
                subnet_prefix=ipaddress.ip_network(spec.subnet).prefixlen,
                server=(SERVER_IP, server.control_port),
                enrollment_token=ENROLLMENT_TOKEN,
                trust=trust,
                swarm_fanout=swarm_fanout,
                wall_offset=SIM_EPOCH.timestamp(),
            )
            agent = AgentCore(
                config,
                store,
                network.now,
                rng=random.Random(rng.random()),
            )
            host = network.add_host(
                office,
                ip,
                nic_rate=spec.nic_rate,
                up_rate=spec.client_up_rate,
                down_rate=spec.client_down_rate,
                buffer_seconds=0.25 if spec.buffer_seconds is None else spec.buffer_seconds,
                lan_loss=spec.loss,
            )
            if fabric is not None:
                use_flow_engines(fabric, host, agent.engines, agent.bindings())
            for port, machine in agent.bindings().items():
                network.bind(host, port, machine)
            network.attach(host, _shell(network, host, agent, spec.disk_seconds))
            clients.append(SimClient(host, agent, store, spec.name, disk_seconds=spec.disk_seconds))
    return Enterprise(
        network, server, clients, manifest, package, console_key, document_sequence=1,
        fabric=fabric, make_server=make_server, manifest_file=manifest_file,
    )  # fmt: skip


def use_flow_engines(
    fabric: FlowFabric, host: Host, engines: dict[Mode, Any], bindings: dict[int, Any]
) -> None:
    """Replace a node's transfer engines (``AgentCore.engines``, ``ServerNode.engines``)
    by flow engines on the same ports, before anything has used them: the seam."""
    for port, machine in bindings.items():
        for mode, engine in engines.items():
            if machine is engine:
                engines[mode] = fabric.engine(host, port)


def file_sha256(store: ContentStoreLike, content_id: ContentId) -> str | None:
    """SHA-256 of a client's cached copy, if it is a ``ContentStore`` and complete."""
    if not isinstance(store, ContentStore) or content_id not in store:
        return None
    return hashlib.sha256(store.data_path(content_id).read_bytes()).hexdigest()
