"""Lab scenarios: TOML files that describe an enterprise, a package and what goes wrong.

A scenario file (shipped in ``shoal_dev/lab/scenarios/``, or any path) reads::

    name = "branch-flash"
    description = "One branch of 12 clients behind a 50 Mbit/s WAN link"
    size_mb = 64                                   # the package, in MiB
    chunk_kib = 1024                               # optional: shoal's chunk size (default:
                                                   # the console's choice for the size)
    systems = ["shoal", "http-direct", "libtorrent"]
    timeout_s = 600

    [[office]]
    name = "branch"
    type = "Default"                               # Default, WiFi or VPN
    clients = 12
    wan_mbit = 50
    client_up_mbit = 1000                          # each device's uplink (HTB)
    client_down_mbit = 1000                        # and downlink

    [churn]                                        # optional: kill and restart clients
    clients = 4                                    # how many, per office
    at_lower_bound = 0.4                           # when: this fraction of the office's T_lb
    down_s = 2.0                                   # how long they stay down

    [corrupt]                                      # optional: lying peers
    clients = 1                                    # per office, serving bad chunks

    [ci]                                           # overrides for a small, quick run
    size_mb = 8
    clients = 4                                    # per office

Two lower bounds per office (``shoal.core.bounds``): Kumar and Ross's for distributing a
file of F bits from one server to N peers (R. Kumar, K. W. Ross, "Peer-assisted file
distribution: the minimum distribution time", 2006), applied per office: the server's
side of the office is the WAN link, so T >= max(F / C_wan, F / d_min, N F / (C_wan + sum
of client uplinks)); and T_lb1, the same when the package crosses the WAN once, as shoal
promises: T >= max(F / C_wan, F / d_min, (N - 1) F / sum of client uplinks). Under
churn, T_lbc: T_lb1 with the killed clients' outages as they happened
(``shoal.core.bounds.churn_bound``).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from shoal.core.bounds import Bound, Outage, churn_bound, kumar_ross_bound, one_copy_bound
from shoal.core.chunking import ALLOWED_CHUNK_SIZES
from shoal.core.errors import ShoalError
from shoal_dev.lab.network import LabOffice

MIB = 1024 * 1024
SYSTEMS = ("shoal", "http-direct", "libtorrent")
OFFICE_TYPES = ("Default", "WiFi", "VPN")


class ScenarioInvalid(ShoalError):
    """A scenario file is missing, not TOML, or describes something the lab cannot build."""


@dataclass(frozen=True, slots=True)
class OfficeScenario:
    """One branch office of a scenario."""

    name: str
    type: str
    clients: int
    wan_mbit: float
    client_up_mbit: float | None = None
    client_down_mbit: float | None = None

    def spec(self, number: int, base: str) -> LabOffice:
        """The emulated network's view of this office (its number is its third octet)."""
        return LabOffice(
            self.name,
            number,
            self.clients,
            wan_mbit=self.wan_mbit,
            client_up_mbit=self.client_up_mbit,
            client_down_mbit=self.client_down_mbit,
            base=base,
        )

    def _rates(self) -> tuple[float, list[float], float]:
        """WAN, each client's uplink and the downlink in bit/s (unshaped: infinite)."""
        uplink = math.inf if self.client_up_mbit is None else self.client_up_mbit * 1e6
        downlink = math.inf if self.client_down_mbit is None else self.client_down_mbit * 1e6
        return self.wan_mbit * 1e6, [uplink] * self.clients, downlink

    def kumar_ross(self, size_bytes: int) -> Bound:
        """Kumar-Ross minimum time to deliver the package to every client of the office.

        A VPN office does not share, so its clients' uplinks count for nothing there.
        """
        wan, uplinks, downlink = self._rates()
        return kumar_ross_bound(size_bytes, wan, uplinks, downlink, shares=self.type != "VPN")

    def one_copy(self, size_bytes: int) -> Bound:
        """``T_lb1``: the minimum time when the package crosses the WAN once (VPN: N times)."""
        wan, uplinks, downlink = self._rates()
        return one_copy_bound(size_bytes, wan, uplinks, downlink, shares=self.type != "VPN")

    def churn_bound(self, size_bytes: int, outages: list[tuple[float, float]]) -> Bound:
        """T_lb1 with the outages of churned clients, ``(down_at, back_at)`` seconds
        from the start, one per client (``shoal.core.bounds.churn_bound``)."""
        wan, uplinks, downlink = self._rates()
        lost = [Outage(at, back, uplinks[0], downlink) for at, back in outages]
        return churn_bound(size_bytes, wan, uplinks, downlink, lost, shares=self.type != "VPN")

    def lower_bound_seconds(self, size_bytes: int) -> float:
        """Kumar-Ross's bound in seconds (see ``kumar_ross``)."""
        return self.kumar_ross(size_bytes).seconds


@dataclass(frozen=True, slots=True)
class Churn:
    """Clients killed (SIGKILL) during the download and restarted a little later."""

    clients: int
    at_lower_bound: float
    down_s: float


@dataclass(frozen=True, slots=True)
class Scenario:
    """What ``shoal lab run`` builds and measures."""

    name: str
    description: str
    size_mb: int
    systems: tuple[str, ...]
    offices: tuple[OfficeScenario, ...]
    timeout_s: float = 600.0
    churn: Churn | None = None
    corrupt_clients: int = 0
    ci: dict[str, int] | None = None
    #: shoal's chunk size in KiB, given to the console at upload; None: the console picks
    #: it from the package size (``shoal.core.chunking.chunk_size_for``).
    chunk_kib: int | None = None

    @property
    def size_bytes(self) -> int:
        return self.size_mb * MIB

    @property
    def chunk_size(self) -> int | None:
        return None if self.chunk_kib is None else self.chunk_kib * 1024

    @property
    def client_count(self) -> int:
        return sum(office.clients for office in self.offices)

    def resized(self, size_mb: int | None = None, clients: int | None = None) -> Scenario:
        """The same scenario with another package size and/or clients per office."""
        scenario = self
        if size_mb is not None:
            scenario = replace(scenario, size_mb=size_mb)
        if clients is not None:
            offices = tuple(replace(office, clients=clients) for office in scenario.offices)
            scenario = replace(scenario, offices=offices)
        scenario._check()
        return scenario

    def with_chunk_kib(self, chunk_kib: int) -> Scenario:
        """The same scenario with shoal's packages cut into ``chunk_kib`` KiB chunks."""
        scenario = replace(self, chunk_kib=chunk_kib)
        scenario._check()
        return scenario

    def for_ci(self) -> Scenario:
        """The scenario with its ``[ci]`` overrides (small sizes), if it has any."""
        if not self.ci:
            return self
        return self.resized(self.ci.get("size_mb"), self.ci.get("clients"))

    def _check(self) -> None:
        if self.size_mb < 1:
            raise ScenarioInvalid(f"{self.name}: size_mb must be at least 1")
        if self.chunk_size is not None and self.chunk_size not in ALLOWED_CHUNK_SIZES:
            raise ScenarioInvalid(
                f"{self.name}: chunk_kib must be a power of two from "
                f"{ALLOWED_CHUNK_SIZES[0] // 1024} to {ALLOWED_CHUNK_SIZES[-1] // 1024}"
            )
        if not self.offices:
            raise ScenarioInvalid(f"{self.name}: at least one [[office]] is needed")
        for office in self.offices:
            if office.clients < 1:
                raise ScenarioInvalid(f"{self.name}: office {office.name} has no clients")
            needed = (self.churn.clients if self.churn else 0) + self.corrupt_clients
            if needed > office.clients:
                raise ScenarioInvalid(
                    f"{self.name}: office {office.name} has {office.clients} clients, "
                    f"fewer than the {needed} that churn or lie"
                )


def builtin_names() -> list[str]:
    """The scenarios shipped with shoal."""
    folder = resources.files("shoal_dev.lab") / "scenarios"
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    )


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name (``branch-flash``), or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            text = path.read_text()
        except OSError as error:
            raise ScenarioInvalid(f"{path}: {error.strerror}") from None
        return parse_scenario(text, str(path))
    resource = resources.files("shoal_dev.lab") / "scenarios" / f"{name_or_path}.toml"
    if not resource.is_file():
        known = ", ".join(builtin_names())
        raise ScenarioInvalid(f"no scenario {name_or_path!r} (shipped: {known}; or a .toml path)")
    return parse_scenario(resource.read_text(), name_or_path)


def parse_scenario(text: str, origin: str) -> Scenario:
    """Parse and check a scenario's TOML."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioInvalid(f"{origin}: not valid TOML ({error})") from None
    try:
        scenario = _scenario(document)
    except (KeyError, TypeError, ValueError) as error:
        raise ScenarioInvalid(f"{origin}: {error!r} is missing or wrong") from None
    scenario._check()
    return scenario


def _scenario(document: dict[str, Any]) -> Scenario:
    systems = tuple(str(system) for system in document.get("systems", SYSTEMS))
    unknown = [system for system in systems if system not in SYSTEMS]
    if unknown:
        raise ScenarioInvalid(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    offices = []
    for table in document["office"]:
        kind = str(table.get("type", "Default"))
        if kind not in OFFICE_TYPES:
            raise ScenarioInvalid(f"office type {kind!r}; known: {', '.join(OFFICE_TYPES)}")
        offices.append(
            OfficeScenario(
                name=str(table["name"]),
                type=kind,
                clients=int(table["clients"]),
                wan_mbit=float(table["wan_mbit"]),
                client_up_mbit=_optional_float(table.get("client_up_mbit")),
                client_down_mbit=_optional_float(table.get("client_down_mbit")),
            )
        )
    churn_table = document.get("churn")
    churn = (
        Churn(
            clients=int(churn_table["clients"]),
            at_lower_bound=float(churn_table.get("at_lower_bound", 0.4)),
            down_s=float(churn_table.get("down_s", 2.0)),
        )
        if churn_table
        else None
    )
    ci = document.get("ci")
    return Scenario(
        name=str(document["name"]),
        description=str(document.get("description", "")),
        size_mb=int(document["size_mb"]),
        systems=systems,
        offices=tuple(offices),
        timeout_s=float(document.get("timeout_s", 600.0)),
        churn=churn,
        corrupt_clients=int(document.get("corrupt", {}).get("clients", 0)),
        ci={str(key): int(value) for key, value in ci.items()} if ci else None,
        chunk_kib=None if document.get("chunk_kib") is None else int(document["chunk_kib"]),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
