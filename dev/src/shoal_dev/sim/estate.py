"""Estate scenarios: many offices, one package for everyone, faults, invariants, reports.

``shoal sim run SCENARIO`` reads a scenario (shipped in ``shoal_dev/sim/scenarios/``, or
any TOML file) and runs it in flow mode (``flows.py``) or packet mode. A scenario::

    name = "estate-10k"
    description = "What it shows"
    size_mb = 100            # the package, MiB (assigned to every device at once)
    chunk_kib = 1024
    checkin_s = 60           # the server's check-in interval
    timeout_s = 7200         # virtual seconds before the run gives up
    origin_mbit = 0          # the server's NIC and central WAN; 0: never the limit

    [estate]                 # offices generated from the run's seed ...
    offices = 500
    devices = 10000
    clients = [2, 100]       # per office (log-uniform, then scaled to ``devices``)
    wan_mbit = [2, 1000]     # log-uniform per office
    client_mbit = [20, 1000] # each office's client links (both ways), log-uniform
    types = { Default = 0.8, WiFi = 0.15, VPN = 0.05 }

    [[office]]               # ... and/or listed, as in the lab's scenarios
    name = "branch"
    type = "Default"
    clients = 12
    wan_mbit = 50
    client_up_mbit = 1000
    client_down_mbit = 1000

    [churn]                  # the lab's churn (instead of crash_* below): ``clients``
    clients = 4              # killed at ``at_lower_bound`` x the first office's T_lb1,
    at_lower_bound = 0.4     # back ``down_s`` later
    down_s = 2.0

    [faults]
    crash_fraction = 0.1     # of the devices: killed once, restarted on their cache
    crash_at_s = [5, 120]    # when (uniform), virtual seconds
    down_s = [2, 30]         # for how long (uniform)
    liar_fraction = 0.01     # devices that serve every chunk with a flipped byte
    wan_outage_s = [30, 60]  # one office's WAN is cut at 30 s for 60 s
    server_restart_s = [40, 5]  # the P2P server dies at 40 s, back 5 s later

    [ci]                     # overrides for a short run (``--ci``; the CI tests)
    size_mb = 4

Control datagrams (registration, check-ins, leases, discovery) always cross the packet
network; in flow mode only chunk transfers are flows.

Every run checks the invariants of issue 10 and says which held (``invariants``): no
unverified byte in a finished file, no request to a peer after it was banned, every
device with a path completes, WAN bytes per sharing office <= 1.05 x F, and (with
``--twice``) the same JSON from the same seed. The report's ``measured`` block (wall
time, CPU, memory of this machine) is the only part that is not a function of the seed.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from shoal.client.download import DownloadState
from shoal.core.errors import ShoalError
from shoal.protocol.transfer import TransferConfig
from shoal_dev.sim.enterprise import Enterprise, SimClient, SimOffice, build_enterprise
from shoal_dev.sim.flows import HashMemo, wire_bytes
from shoal_dev.sim.memstore import LyingMemoryStore, MemoryStore

MIB = 1024 * 1024
WAN_LIMIT = 1.05
"""WAN bytes per sharing office, in package sizes (issue 10)."""
TYPES = ("Default", "WiFi", "VPN")
PROGRESS_EVERY_S = 30.0
"""Wall seconds between two progress lines of a run (to ``say``; not in the report)."""


class ScenarioInvalid(ShoalError):
    """A scenario file is missing, not TOML, or describes an estate that cannot be built."""


@dataclass(frozen=True, slots=True)
class Faults:
    crash_fraction: float = 0.0
    crash_at_s: tuple[float, float] = (5.0, 60.0)
    down_s: tuple[float, float] = (2.0, 30.0)
    liar_fraction: float = 0.0
    wan_outage_s: tuple[float, float] | None = None
    server_restart_s: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Generated:
    offices: int
    devices: int
    clients: tuple[int, int] = (2, 100)
    wan_mbit: tuple[float, float] = (2.0, 1000.0)
    client_mbit: tuple[float, float] = (20.0, 1000.0)
    types: tuple[tuple[str, float], ...] = (("Default", 0.8), ("WiFi", 0.15), ("VPN", 0.05))


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str = ""
    size_mb: float = 100.0
    chunk_kib: int = 1024
    checkin_s: int = 60
    timeout_s: float = 7200.0
    origin_mbit: float = 0.0
    estate: Generated | None = None
    listed: tuple[SimOffice, ...] = ()
    faults: Faults = field(default_factory=Faults)

    @property
    def size_bytes(self) -> int:
        return int(self.size_mb * MIB)

    def offices(self, seed: int) -> list[SimOffice]:
        """The listed offices, then the generated ones (a function of ``seed``)."""
        offices = list(self.listed)
        if self.estate is not None:
            offices += generate_offices(self.estate, seed, first=len(offices))
        return offices


def _pair(value: Any, origin: str, key: str) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and value[0] <= value[1]):
        raise ScenarioInvalid(f"{origin}: {key} must be [low, high]")
    return float(value[0]), float(value[1])


def _at_for(value: Any, origin: str, key: str) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and min(value) >= 0):
        raise ScenarioInvalid(f"{origin}: {key} must be [at_s, for_s]")
    return float(value[0]), float(value[1])


def parse_scenario(text: str, origin: str, *, ci: bool = False) -> Scenario:
    """A scenario from TOML text (``ci``: with its ``[ci]`` overrides)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioInvalid(f"{origin}: not TOML ({error})") from None
    ci_overrides = data.pop("ci", {})
    if ci:
        for key, value in ci_overrides.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
    try:
        estate = None
        if "estate" in data:
            table = data["estate"]
            types = tuple((str(k), float(v)) for k, v in table.get("types", {}).items())
            if any(name not in TYPES for name, _ in types):
                raise ScenarioInvalid(f"{origin}: office types are {', '.join(TYPES)}")
            estate = Generated(
                offices=int(table["offices"]),
                devices=int(table["devices"]),
                clients=tuple(
                    int(v) for v in _pair(table.get("clients", [2, 100]), origin, "clients")
                ),  # type: ignore[arg-type]
                wan_mbit=_pair(table.get("wan_mbit", [2, 1000]), origin, "wan_mbit"),
                client_mbit=_pair(table.get("client_mbit", [20, 1000]), origin, "client_mbit"),
                **({"types": types} if types else {}),
            )
            if (
                not estate.clients[0] * estate.offices
                <= estate.devices
                <= estate.clients[1] * estate.offices
            ):
                raise ScenarioInvalid(
                    f"{origin}: {estate.devices} devices do not fit {estate.offices} "
                    f"offices of {estate.clients[0]} to {estate.clients[1]}"
                )
        listed = tuple(
            SimOffice(
                name=str(office["name"]),
                subnet=f"10.200.{number}.0/24",
                clients=int(office["clients"]),
                wan_rate=float(office["wan_mbit"]) * 1e6 / 8,
                type=str(office.get("type", "Default")),
                nic_rate=float(office.get("client_up_mbit", 1000)) * 1e6 / 8,
                client_down_rate=float(
                    office.get("client_down_mbit", office.get("client_up_mbit", 1000))
                )
                * 1e6
                / 8,
                wan_rtt=float(office["rtt_ms"]) / 1000 if "rtt_ms" in office else None,
            )
            for number, office in enumerate(data.get("office", []))
        )
        if ci and "clients" in ci_overrides:
            listed = tuple(
                replace(office, clients=int(ci_overrides["clients"])) for office in listed
            )
        faults_table = data.get("faults", {})
        faults = Faults(
            crash_fraction=float(faults_table.get("crash_fraction", 0.0)),
            crash_at_s=_pair(faults_table.get("crash_at_s", [5, 60]), origin, "crash_at_s"),
            down_s=_pair(faults_table.get("down_s", [2, 30]), origin, "down_s"),
            liar_fraction=float(faults_table.get("liar_fraction", 0.0)),
            wan_outage_s=_at_for(faults_table["wan_outage_s"], origin, "wan_outage_s")
            if "wan_outage_s" in faults_table
            else None,
            server_restart_s=_at_for(faults_table["server_restart_s"], origin, "server_restart_s")
            if "server_restart_s" in faults_table
            else None,
        )
        churn = data.get("churn")
        if churn is not None and listed:
            # The lab's churn: ``clients`` killed at ``at_lower_bound`` x the first
            # office's T_lb1, back ``down_s`` later.
            size = int(float(data.get("size_mb", 100)) * MIB)
            at = float(churn["at_lower_bound"]) * listed[0].one_copy_bound(size).seconds
            devices = sum(office.clients for office in listed)
            clients = min(int(churn["clients"]), devices)
            faults = replace(
                faults,
                crash_fraction=clients / devices,
                crash_at_s=(at, at),
                down_s=(float(churn["down_s"]),) * 2,
            )
        scenario = Scenario(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            size_mb=float(data.get("size_mb", 100)),
            chunk_kib=int(data.get("chunk_kib", 1024)),
            checkin_s=int(data.get("checkin_s", 60)),
            timeout_s=float(data.get("timeout_s", 7200)),
            origin_mbit=float(data.get("origin_mbit", 0)),
            estate=estate,
            listed=listed,
            faults=faults,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ScenarioInvalid(f"{origin}: {error!r}") from None
    if estate is None and not listed:
        raise ScenarioInvalid(f"{origin}: no [estate] and no [[office]]")
    return scenario


def load_scenario(name_or_path: str, *, ci: bool = False) -> Scenario:
    """A shipped scenario by name (``estate-10k``), or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return parse_scenario(path.read_text(), str(path), ci=ci)
        except OSError as error:
            raise ScenarioInvalid(f"{path}: {error.strerror}") from None
    shipped = resources.files("shoal_dev.sim") / "scenarios" / f"{name_or_path}.toml"
    if not shipped.is_file():
        names = sorted(
            item.name.removesuffix(".toml")
            for item in (resources.files("shoal_dev.sim") / "scenarios").iterdir()
            if item.name.endswith(".toml")
        )
        raise ScenarioInvalid(f"no scenario {name_or_path!r}; shipped: {', '.join(names)}")
    return parse_scenario(shipped.read_text(), name_or_path, ci=ci)


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def generate_offices(estate: Generated, seed: int, *, first: int = 0) -> list[SimOffice]:
    """``estate.offices`` offices holding ``estate.devices`` devices, from ``seed``."""
    rng = random.Random(f"estate-layout-{seed}")
    low, high = estate.clients
    sizes = [round(_log_uniform(rng, low, high)) for _ in range(estate.offices)]
    while (total := sum(sizes)) != estate.devices:
        index = rng.randrange(len(sizes))
        step = 1 if total < estate.devices else -1
        if low <= sizes[index] + step <= high:
            sizes[index] += step
    names = [name for name, _ in estate.types]
    weights = [weight for _, weight in estate.types]
    offices = []
    for number, clients in enumerate(sizes, start=first):
        client_rate = _log_uniform(rng, *estate.client_mbit) * 1e6 / 8
        offices.append(
            SimOffice(
                name=f"office-{number:03d}",
                subnet=f"10.{1 + number // 256}.{number % 256}.0/24",
                clients=clients,
                wan_rate=_log_uniform(rng, *estate.wan_mbit) * 1e6 / 8,
                type=rng.choices(names, weights)[0],
                nic_rate=client_rate,
            )
        )
    return offices


# ------------------------------------------------------------------------ running


@dataclass(slots=True)
class _ServerLoad:
    """Counts and times the server's control machine (its CPU, not the data plane's)."""

    datagrams: int = 0
    cpu_seconds: float = 0.0
    peak_leases: int = 0
    per_second: dict[int, int] = field(default_factory=dict)
    refused_busy: int = 0
    """Chunk requests the server's earlier processes refused BUSY (before a restart)."""


class _TimedControl:
    """The server's control machine, counted and timed (bound in its place)."""

    def __init__(self, machine: Any, load: _ServerLoad, leases: Callable[[], int]) -> None:
        self.machine = machine
        self.load = load
        self.leases = leases
        self.counted_at: object = None

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        load = self.load
        load.datagrams += 1
        second = int(now)
        load.per_second[second] = load.per_second.get(second, 0) + 1
        started = time.process_time()
        self.machine.receive_datagram(data, addr, now)
        load.cpu_seconds += time.process_time() - started
        self._count_leases()

    def _count_leases(self) -> None:
        # The number of leases held rises only when a lease is granted (``changes``
        # moves); renewals touch live leases only and time only lapses them. Counting
        # them all after every datagram was 12% of estate-10k's first virtual second.
        table = self.machine.core.rendezvous
        counted_at = (table, table.changes)
        if counted_at != self.counted_at:
            self.counted_at = counted_at
            self.load.peak_leases = max(self.load.peak_leases, self.leases())

    def handle_timer(self, now: float) -> None:
        started = time.process_time()
        self.machine.handle_timer(now)
        self.load.cpu_seconds += time.process_time() - started

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        return self.machine.datagrams_to_send(now)  # type: ignore[no-any-return]

    def get_timer(self) -> float | None:
        return self.machine.get_timer()  # type: ignore[no-any-return]


def _leases(enterprise: Enterprise) -> Callable[[], int]:
    # The stripe leases held: how much rendezvous state the server keeps.
    return lambda: enterprise.server.core.rendezvous.held(enterprise.network.now)


def _watch_server(enterprise: Enterprise, load: _ServerLoad) -> None:
    server = enterprise.server
    host = enterprise.server_host()
    port = server.control_port
    host.machines[port] = _TimedControl(server.control, load, _leases(enterprise))


@dataclass(slots=True)
class _Watch:
    """Requests to banned peers, seen as they are made (invariant 2)."""

    asked_banned: list[str] = field(default_factory=list)


def _watch_requests(client: SimClient, watch: _Watch) -> None:
    """Wrap the client's engines' ``request_chunk``: a request to a peer its download
    has banned is a violation."""
    agent = client.agent
    for engine in agent.engines.values():
        original = engine.request_chunk

        def checked(peer: Any, content_id: Any, *rest: Any, _original: Any = original) -> int:
            download = client.agent.downloads.get(content_id)
            if download is not None and peer[0] in download.banned:
                watch.asked_banned.append(f"{client.host.ip} asked banned {peer[0]}")
            return _original(peer, content_id, *rest)  # type: ignore[no-any-return]

        engine.request_chunk = checked  # type: ignore[method-assign,assignment]


@dataclass(slots=True)
class _Plan:
    crashes: list[tuple[float, float, int]]  # (at, down for, client index)
    liars: set[int]
    outage_office: str | None


def _plan(scenario: Scenario, offices: list[SimOffice], seed: int) -> _Plan:
    rng = random.Random(f"estate-faults-{seed}")
    faults = scenario.faults
    devices = sum(office.clients for office in offices)
    indices = list(range(devices))
    liars = set(rng.sample(indices, round(devices * faults.liar_fraction)))
    honest = [index for index in indices if index not in liars]
    crashed = rng.sample(honest, min(len(honest), round(devices * faults.crash_fraction)))
    crashes = [
        (rng.uniform(*faults.crash_at_s), rng.uniform(*faults.down_s), index)
        for index in sorted(crashed)
    ]
    sharing = [office.name for office in offices if office.type != "VPN"]
    outage = rng.choice(sharing) if faults.wan_outage_s and sharing else None
    return _Plan(sorted(crashes), liars, outage)


def run_scenario(
    scenario: Scenario,
    *,
    mode: str = "flow",
    seed: int = 1,
    root: Path,
    say: Callable[[str], None] = lambda _line: None,
    pump_window: float | None = None,
) -> dict[str, Any]:
    """Run ``scenario``; return the report (see ``report``), invariants included.

    ``pump_window``: ``SimNetwork.pump_window`` (None: a pump after every input).

    Every ``PROGRESS_EVERY_S`` of wall time a line to ``say`` tells how far it got."""
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    offices = scenario.offices(seed)
    plan = _plan(scenario, offices, seed)
    hashes = HashMemo()
    liars = plan.liars

    made = iter(range(sum(office.clients for office in offices)))

    def store(_directory: Path, _number_in_office: int) -> MemoryStore:
        # Called once per device, in the estate's order (``_plan``'s indices).
        return (LyingMemoryStore if next(made) in liars else MemoryStore)(hashes)

    enterprise = build_enterprise(
        root,
        offices,
        package_size=scenario.size_bytes,
        chunk_size=scenario.chunk_kib * 1024,
        seed=seed,
        checkin_seconds=scenario.checkin_s,
        store_factory=store,
        mode=mode,
        origin_rate=scenario.origin_mbit * 1e6 / 8 if scenario.origin_mbit else math.inf,
        hashes=hashes,
    )
    built = time.perf_counter() - wall_started
    say(f"built {len(enterprise.clients)} devices in {len(offices)} offices ({built:.1f} s)")
    load = _ServerLoad()
    _watch_server(enterprise, load)
    watch = _Watch()
    for client in enterprise.clients:
        _watch_requests(client, watch)
    network = enterprise.network
    network.pump_window = pump_window
    for at, down_for, index in plan.crashes:
        client = enterprise.clients[index]

        def crash(client: SimClient = client) -> None:
            enterprise.kill(client)

        network.at(at, crash)

        def back(client: SimClient = client) -> None:
            enterprise.restart(client)
            _watch_requests(client, watch)

        network.at(at + down_for, back)
    if plan.outage_office is not None and scenario.faults.wan_outage_s is not None:
        _schedule_outage(enterprise, plan.outage_office, *scenario.faults.wan_outage_s)
    if scenario.faults.server_restart_s is not None:
        at, down_for = scenario.faults.server_restart_s

        def server_dies() -> None:
            load.refused_busy += enterprise.server.counters.refused_busy
            enterprise.kill_server()

        network.at(at, server_dies)

        def server_back() -> None:
            enterprise.restart_server()
            _watch_server(enterprise, load)

        network.at(at + down_for, server_back)
    last_crash = max((at + down for at, down, _ in plan.crashes), default=0.0)
    everyone_done = _Completion(enterprise)
    next_progress = time.perf_counter() + PROGRESS_EVERY_S

    events = 0
    asked_at: tuple[int, bool] | None = None  # (pumps, past the last crash) when last asked
    answer = False

    def done() -> bool:
        nonlocal next_progress, events, asked_at, answer
        events += 1
        # A long run says how far it got (the clock read every 4096 events, not each).
        if not events & 4095 and time.perf_counter() >= next_progress:
            next_progress = time.perf_counter() + PROGRESS_EVERY_S
            complete = sum(1 for client in enterprise.clients if enterprise.complete(client))
            say(
                f"virtual {network.now:.1f} s: {complete}/{len(enterprise.clients)} devices "
                f"complete ({time.perf_counter() - wall_started:.0f} s wall, "
                f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB max RSS)"
            )
        # A device completes in its agent's poll, so only in a pump (a restart pumps too,
        # and no device dies after the last crash): without one since, the answer stands
        # (a third of the events: flow finish checks, a datagram's hop to the next link).
        now_asked = (network.pumps, network.now > last_crash)
        if now_asked != asked_at:
            asked_at = now_asked
            answer = now_asked[1] and everyone_done()
        return answer

    enterprise.run(until=scenario.timeout_s, stop=done)
    document = report(scenario, enterprise, offices, plan, load, watch, mode=mode, seed=seed)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    document["measured"] = {
        "wall_s": round(time.perf_counter() - wall_started, 2),
        "build_wall_s": round(built, 2),
        "cpu_s": round(time.process_time() - cpu_started, 2),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "server_control_cpu_s": round(load.cpu_seconds, 3),
        "server_control_cpu_s_per_simulated_hour": round(
            load.cpu_seconds * 3600 / max(network.now, 1e-9), 3
        ),
    }
    return document


class _Completion:
    """Has every live device completed? Asked after every event of the run, so it
    must not scan 10,000 devices each time: devices found complete are not asked
    again (a cursor), and the full scan runs only once the cursor reaches the end.

    Sound because the run asks it only after the last restart: from then on a
    device's download only moves towards completion, and the final full scan
    (``Enterprise.all_complete``) confirms the answer, resetting the cursor if not.
    """

    def __init__(self, enterprise: Enterprise) -> None:
        self.enterprise = enterprise
        self.cursor = 0

    def __call__(self) -> bool:
        enterprise = self.enterprise
        clients = enterprise.clients
        content_id = enterprise.content_id
        # ``Enterprise.complete`` inlined: this runs after every event of the run (4% of
        # estate-1k's CPU through its three calls).
        while self.cursor < len(clients):
            client = clients[self.cursor]
            if client.host.alive:
                download = client.agent.downloader.downloads.get(content_id)
                if download is None or download.state is not DownloadState.COMPLETE:
                    return False
            self.cursor += 1
        if enterprise.all_complete():
            return True
        self.cursor = 0
        return False


def _schedule_outage(enterprise: Enterprise, office_name: str, at: float, length: float) -> None:
    office = enterprise.network.offices[office_name]
    links = (office.wan_up, office.wan_down)
    rates = [link.rate for link in links]

    def cut() -> None:
        for link in links:
            link.loss = 1.0  # every control datagram is lost
            if enterprise.fabric is not None:
                enterprise.fabric.set_link_rate(link, 0.0)

    def mend() -> None:
        for link, rate in zip(links, rates, strict=True):
            link.loss = 0.0
            if enterprise.fabric is not None:
                enterprise.fabric.set_link_rate(link, rate)

    enterprise.network.at(at, cut)
    enterprise.network.at(at + length, mend)


# ------------------------------------------------------------------------ reports


def _verified(enterprise: Enterprise, client: SimClient, hashes: HashMemo) -> bool:
    """Every chunk the client's finished copy holds matches the manifest's hash."""
    store = client.store
    assert isinstance(store, MemoryStore)
    content_id = enterprise.content_id
    for index, expected in enumerate(enterprise.manifest.chunk_hashes):
        chunk = store.stored_chunk(content_id, index)
        if chunk is None or hashes.sha256(chunk) != expected:
            return False
    return True


def report(
    scenario: Scenario,
    enterprise: Enterprise,
    offices: list[SimOffice],
    plan: _Plan,
    load: _ServerLoad,
    watch: _Watch,
    *,
    mode: str,
    seed: int,
) -> dict[str, Any]:
    """The run's results: per office, totals, server load, invariants (seed-pure)."""
    size = enterprise.manifest.size
    by_office: dict[str, list[SimClient]] = {}
    for client in enterprise.clients:
        by_office.setdefault(client.office, []).append(client)
    hashes = HashMemo()
    banned = {
        ip
        for client in enterprise.clients
        if (download := enterprise.download_of(client)) is not None
        for ip in download.banned
    }
    config = enterprise.fabric.config if enterprise.fabric is not None else TransferConfig()
    chunk_wire = wire_bytes(enterprise.manifest.chunk_size, config)
    # Chunks the server was still sending a device when it was banned, cut off then.
    withdrawn = enterprise.fabric.counters.bytes_withdrawn if enterprise.fabric is not None else {}
    rows: list[dict[str, Any]] = []
    for spec in offices:
        members = by_office[spec.name]
        downloads = [enterprise.download_of(client) for client in members]
        received = [enterprise.received(client) for client in members]
        # What the server sent devices later banned in the office is lost to it (a liar
        # passes on no good byte): the next holder of their stripes fetches it again.
        to_banned = sum(
            from_server
            for client, (from_server, _) in zip(members, received, strict=True)
            if client.host.ip in banned
        )
        to_banned_wire = to_banned // enterprise.manifest.chunk_size * chunk_wire + sum(
            withdrawn.get(client.host.ip, 0) for client in members if client.host.ip in banned
        )
        finished = [
            d.completed_at for d in downloads if d is not None and d.completed_at is not None
        ]
        bound = spec.one_copy_bound(size)
        t_last = max(finished) if len(finished) == len(members) else None
        wan = enterprise.wan_bytes_down(spec.name)
        rows.append(
            {
                "office": spec.name,
                "type": spec.type,
                "devices": spec.clients,
                "wan_mbit": round(spec.wan_rate * 8 / 1e6, 3),
                "client_mbit": round(spec.up_rate * 8 / 1e6, 3),
                "completed": len(finished),
                "t_last_s": None if t_last is None else round(t_last, 3),
                "t_lb1_s": round(bound.seconds, 3),
                "binding": bound.binding,
                "t_last_over_t_lb1": None if t_last is None else round(t_last / bound.seconds, 4),
                "wan_bytes": wan,
                "wan_over_f": round(wan / size, 4),
                "bytes_from_server": sum(from_server for from_server, _ in received),
                "bytes_from_peers": sum(from_peers for _, from_peers in received),
                "bytes_from_server_to_banned": to_banned,
                "wan_over_f_but_banned": round((wan - to_banned_wire) / size, 4),
                "completions_s": sorted(round(t, 3) for t in finished),
            }
        )
    sharing = [row for row in rows if row["type"] != "VPN"]
    ratios = sorted(
        row["t_last_over_t_lb1"] for row in rows if row["t_last_over_t_lb1"] is not None
    )
    unfinished = [
        client.host.ip for client in enterprise.clients if not enterprise.complete(client)
    ]
    corrupt = [
        client.host.ip
        for client in enterprise.clients
        if enterprise.complete(client) and not _verified(enterprise, client, hashes)
    ]
    over_wan = [row["office"] for row in sharing if row["wan_bytes"] > WAN_LIMIT * size]
    liar_ips = {enterprise.clients[index].host.ip for index in plan.liars}
    # A liar nobody asked (a VPN office, or peers served first) has told no lie to catch.
    lied = {
        client.host.ip
        for client in enterprise.clients
        if isinstance(client.store, LyingMemoryStore) and client.store.lies_told
    }
    control = enterprise.server.control.counters
    invariants = {
        "no_unverified_byte_in_a_finished_file": {"held": not corrupt, "violations": corrupt[:20]},
        "a_banned_peer_is_never_asked_again": {
            "held": not watch.asked_banned,
            "violations": watch.asked_banned[:20],
        },
        "every_device_with_a_path_completes": {
            "held": not unfinished,
            "violations": unfinished[:20],
        },
        "wan_bytes_per_sharing_office_at_most_1_05_f": {
            "held": not over_wan,
            "violations": over_wan[:20],
        },
    }
    timeline = sorted(t for row in rows for t in row["completions_s"])
    return {
        "scenario": scenario.name,
        "mode": mode,
        "seed": seed,
        "package_bytes": size,
        "chunk_bytes": enterprise.manifest.chunk_size,
        "devices": len(enterprise.clients),
        "offices": len(offices),
        "virtual_s": round(enterprise.network.now, 3),
        "completed": len(enterprise.clients) - len(unfinished),
        "t_last_over_t_lb1": {
            "median": ratios[len(ratios) // 2] if ratios else None,
            "p90": ratios[int(len(ratios) * 0.9)] if ratios else None,
            "max": ratios[-1] if ratios else None,
            "offices_over_1_3": sum(1 for r in ratios if r > 1.3),
        },
        "wan_over_f_max_sharing": max((row["wan_over_f"] for row in sharing), default=None),
        "wan_over_f_but_banned_max_sharing": max(
            (row["wan_over_f_but_banned"] for row in sharing), default=None
        ),
        "bytes_by_source": {
            "server": sum(row["bytes_from_server"] for row in rows),
            "peers": sum(row["bytes_from_peers"] for row in rows),
        },
        "server_load": {
            "control_datagrams": load.datagrams,
            "control_datagrams_per_s_mean": round(
                load.datagrams / max(enterprise.network.now, 1e-9), 2
            ),
            "control_datagrams_per_s_peak": max(load.per_second.values(), default=0),
            "peak_lease_table": load.peak_leases,
            "chunk_requests_refused_busy": load.refused_busy
            + enterprise.server.counters.refused_busy,
            "answered": control.answered,
        },
        "faults": {
            "crashed": len(plan.crashes),
            "liars": sorted(liar_ips),
            "liars_that_lied": sorted(lied),
            "liars_banned": sorted(liar_ips & banned),
            "wan_outage_office": plan.outage_office,
            "server_restarted": scenario.faults.server_restart_s is not None,
            "takeovers": enterprise.server.core.rendezvous.takeovers,
        },
        "flow_model": None
        if enterprise.fabric is None
        else {
            "flows_started": enterprise.fabric.counters.flows_started,
            "flows_aborted": enterprise.fabric.counters.flows_aborted,
            "flows_cancelled": enterprise.fabric.counters.flows_cancelled,
            "bytes_cancelled": enterprise.fabric.counters.bytes_cancelled,
            "recomputations": enterprise.fabric.counters.recomputations,
            "largest_recomputation": enterprise.fabric.counters.largest_recomputation,
        },
        "completions_over_time_s": timeline[:: max(1, len(timeline) // 200)],
        "invariants": invariants,
        "offices_detail": rows,
    }


def seed_pure(document: dict[str, Any]) -> str:
    """The report without what this machine measured: equal for equal seeds."""
    return json.dumps({k: v for k, v in document.items() if k != "measured"}, sort_keys=True)


def format_report(document: dict[str, Any]) -> str:
    """A few lines for a terminal: totals, the worst offices, the invariants."""
    ratio = document["t_last_over_t_lb1"]
    lines = [
        f"{document['scenario']} ({document['mode']} mode, seed {document['seed']}): "
        f"{document['completed']}/{document['devices']} devices in {document['offices']} offices "
        f"completed by {document['virtual_s']:.1f} s (virtual)",
        f"T_last/T_lb1 per office: median {ratio['median']}, p90 {ratio['p90']}, max "
        f"{ratio['max']}, {ratio['offices_over_1_3']} offices over 1.3",
        f"WAN/F max over sharing offices: {document['wan_over_f_max_sharing']} "
        f"({document['wan_over_f_but_banned_max_sharing']} without what banned devices "
        f"received); bytes from "
        f"server {document['bytes_by_source']['server']}, from peers "
        f"{document['bytes_by_source']['peers']}",
        f"server: {document['server_load']['control_datagrams']} control datagrams (peak "
        f"{document['server_load']['control_datagrams_per_s_peak']}/s), peak lease table "
        f"{document['server_load']['peak_lease_table']}, "
        f"{document['server_load']['chunk_requests_refused_busy']} chunk requests refused BUSY",
    ]
    worst = sorted(
        document["offices_detail"],
        key=lambda row: -(row["t_last_over_t_lb1"] or math.inf),
    )[:5]
    for row in worst:
        lines.append(
            f"  {row['office']} {row['type']:7} {row['devices']:3} devices, "
            f"WAN {row['wan_mbit']} Mbit/s: "
            f"T_last {row['t_last_s']} s, T_lb1 {row['t_lb1_s']} s ({row['binding']}), "
            f"WAN/F {row['wan_over_f']}"
        )
    flows = document["flow_model"]
    if flows is not None:
        lines.append(
            f"flows: {flows['flows_started']} started, {flows['flows_aborted']} aborted, "
            f"{flows['flows_cancelled']} cancelled on their way ({flows['bytes_cancelled']} bytes)"
        )
    for name, outcome in document["invariants"].items():
        lines.append(f"invariant {name}: {'held' if outcome['held'] else 'VIOLATED'}")
    if "measured" in document:
        m = document["measured"]
        lines.append(
            f"measured: {m['wall_s']} s wall, {m['cpu_s']} s CPU, {m['max_rss_mb']} MB max RSS; "
            f"server control {m['server_control_cpu_s_per_simulated_hour']} CPU s "
            "per simulated hour"
        )
    return "\n".join(lines)


def write_pngs(document: dict[str, Any], folder: Path) -> list[Path]:
    """Per-office completion against the bound, and completions over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rows = [row for row in document["offices_detail"] if row["t_last_s"] is not None]
    name = f"{document['scenario']}-{document['mode']}"
    figure, axes = plt.subplots(figsize=(7, 6))
    colours = {"Default": "tab:blue", "WiFi": "tab:green", "VPN": "tab:red"}
    for kind, colour in colours.items():
        chosen = [row for row in rows if row["type"] == kind]
        axes.scatter(
            [r["t_lb1_s"] for r in chosen],
            [r["t_last_s"] for r in chosen],
            s=8,
            c=colour,
            label=kind,
        )
    if rows:
        top = max(max(r["t_lb1_s"], r["t_last_s"]) for r in rows)
        low = min(r["t_lb1_s"] for r in rows)
        axes.plot([low, top], [low, top], "k-", lw=0.8, label="T_last = T_lb1")
        axes.plot([low, top], [1.3 * low, 1.3 * top], "k--", lw=0.8, label="1.3 x T_lb1")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("T_lb1 (s, one WAN copy)")
    axes.set_ylabel("T_last (s)")
    axes.set_title(f"{document['scenario']}: per-office completion ({document['mode']} mode)")
    axes.legend()
    bound_png = folder / f"{name}-offices.png"
    figure.savefig(bound_png, dpi=110)
    plt.close(figure)
    times = sorted(t for row in document["offices_detail"] for t in row["completions_s"])
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.step(times, range(1, len(times) + 1), where="post")
    axes.set_xlabel("virtual time (s)")
    axes.set_ylabel("devices complete")
    axes.set_title(f"{document['scenario']}: completions over time ({document['mode']} mode)")
    timeline_png = folder / f"{name}-completions.png"
    figure.savefig(timeline_png, dpi=110)
    plt.close(figure)
    return [bound_png, timeline_png]
