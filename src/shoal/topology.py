"""Offices and their subnets: parsing, validation and lookup, without any storage.

Theory of operation
-------------------
Offices form one tree whose root is the Central Office. Each office has a type
(Default, WiFi, VPN) and zero or more subnets (CIDR). No two subnets anywhere in the
tree overlap, so an address belongs to at most one office. The console stores the tree;
the P2P server and the client use the same functions to place an address in an office.

A topology is read from CSV (header ``office,parent,type,subnets``; subnets separated
by spaces or semicolons; the root has an empty parent) or from JSON
(``{"offices": [{"office", "parent", "type", "subnets": [...]}]}``). Every problem is
reported with where it is (CSV line or JSON entry) and which field is wrong; all
problems are collected before ``TopologyInvalid`` is raised, so one upload shows them all.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from shoal.core.errors import ShoalError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CENTRAL_OFFICE = "Central Office"
CSV_COLUMNS = ("office", "parent", "type", "subnets")
MAX_OFFICE_NAME = 200


class OfficeType(StrEnum):
    """How devices of an office share: broadcast, unicast peer lists, or not at all."""

    DEFAULT = "Default"
    WIFI = "WiFi"
    VPN = "VPN"


@dataclass(frozen=True, slots=True)
class TopologyProblem:
    """One thing wrong in a topology file: where, which field, and what."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}, field {self.field!r}: {self.message}"


class TopologyInvalid(ShoalError, ValueError):
    """A topology that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[TopologyProblem]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(str(problem) for problem in self.problems[:5])
        more = len(self.problems) - 5
        super().__init__(f"invalid topology: {shown}" + (f" (and {more} more)" if more > 0 else ""))


class ServerOutsideCentralOffice(ShoalError):
    """A P2P server whose address is in no subnet of the Central Office."""


@dataclass(frozen=True, slots=True)
class Office:
    """One office of the tree."""

    name: str
    parent: str | None
    type: OfficeType
    subnets: tuple[IPNetwork, ...]
    where: str = field(default="", compare=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "office": self.name,
            "parent": self.parent,
            "type": self.type.value,
            "subnets": [str(subnet) for subnet in self.subnets],
        }


@dataclass(frozen=True, slots=True)
class Topology:
    """A validated office tree, parents before children."""

    offices: tuple[Office, ...]

    @property
    def root(self) -> Office:
        return self.offices[0]

    def get(self, name: str) -> Office | None:
        for office in self.offices:
            if office.name == name:
                return office
        return None

    def office_for_address(self, address: str | IPAddress) -> Office | None:
        """The office one of whose subnets holds ``address``, or None."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        for office in self.offices:
            if any(ip.version == subnet.version and ip in subnet for subnet in office.subnets):
                return office
        return None

    def subtree(self, name: str) -> set[str]:
        """Names of ``name`` and every office below it."""
        below = {name}
        for office in self.offices:  # parents come first, so one pass is enough
            if office.parent in below:
                below.add(office.name)
        return below

    def to_csv(self) -> str:
        output = io.StringIO()
        writer = csv.writer(output, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for office in self.offices:
            writer.writerow(
                [
                    office.name,
                    office.parent or "",
                    office.type.value,
                    " ".join(str(subnet) for subnet in office.subnets),
                ]
            )
        return output.getvalue()

    def to_json(self) -> dict[str, object]:
        return {"offices": [office.as_dict() for office in self.offices]}


def default_topology() -> Topology:
    """A Central Office with no subnet: what a new console starts from."""
    return Topology((Office(CENTRAL_OFFICE, None, OfficeType.DEFAULT, ()),))


@dataclass(slots=True)
class _RawOffice:
    where: str
    name: object
    parent: object
    type: object
    subnets: object


def parse_csv(text: str) -> Topology:
    """Parse and validate a CSV topology; ``TopologyInvalid`` names each line and field."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise TopologyInvalid(
            [TopologyProblem("line 1", "header", f"empty file: expected {','.join(CSV_COLUMNS)}")]
        ) from None
    except csv.Error as error:
        raise TopologyInvalid([TopologyProblem("line 1", "header", str(error))]) from None
    columns = [column.strip().lower() for column in header]
    missing = [column for column in CSV_COLUMNS if column not in columns]
    if missing:
        raise TopologyInvalid(
            [
                TopologyProblem(
                    "line 1", column, f"missing column (header must hold {','.join(CSV_COLUMNS)})"
                )
                for column in missing
            ]
        )
    index = {column: columns.index(column) for column in CSV_COLUMNS}
    raw: list[_RawOffice] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"line {reader.line_num}"
            cells = [
                row[index[column]] if index[column] < len(row) else "" for column in CSV_COLUMNS
            ]
            name, parent, office_type, subnets = cells
            raw.append(
                _RawOffice(where, name, parent, office_type, subnets.replace(";", " ").split())
            )
    except csv.Error as error:
        raise TopologyInvalid(
            [TopologyProblem(f"line {reader.line_num}", "office", str(error))]
        ) from None
    return _validate(raw)


def parse_json(document: object) -> Topology:
    """Validate a JSON topology (already decoded); entries are named ``entry N``."""
    entries = document.get("offices") if isinstance(document, Mapping) else document
    if not isinstance(entries, list):
        raise TopologyInvalid(
            [TopologyProblem("document", "offices", 'expected {"offices": [ ... ]}')]
        )
    raw: list[_RawOffice] = []
    problems: list[TopologyProblem] = []
    for number, entry in enumerate(entries, start=1):
        where = f"entry {number}"
        if not isinstance(entry, Mapping):
            problems.append(TopologyProblem(where, "office", "expected an object"))
            continue
        raw.append(
            _RawOffice(
                where,
                entry.get("office", entry.get("name")),
                entry.get("parent"),
                entry.get("type", OfficeType.DEFAULT.value),
                entry.get("subnets", []),
            )
        )
    if problems:
        raise TopologyInvalid(problems)
    return _validate(raw)


def build(offices: Iterable[Office]) -> Topology:
    """Validate offices built in code (e.g. loaded from the console's database)."""
    return _validate(
        [
            _RawOffice(
                office.where or f"office {office.name!r}",
                office.name,
                office.parent or "",
                office.type.value,
                [str(subnet) for subnet in office.subnets],
            )
            for office in offices
        ]
    )


def _parse_type(value: object) -> OfficeType | None:
    if value is None or value == "":
        return OfficeType.DEFAULT
    if isinstance(value, str):
        for office_type in OfficeType:
            if office_type.value.lower() == value.strip().lower():
                return office_type
    return None


def _parse_subnet(text: object) -> tuple[IPNetwork | None, str]:
    if not isinstance(text, str):
        return None, f"{text!r} is not a CIDR string"
    try:
        return ipaddress.ip_network(text.strip(), strict=True), ""
    except ValueError as error:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            return None, f"{text!r} is not a CIDR subnet ({error})"
        return None, f"{text!r} has host bits set; did you mean {loose}?"


def _validate(raw: Sequence[_RawOffice]) -> Topology:
    problems: list[TopologyProblem] = []
    offices: dict[str, Office] = {}
    for entry in raw:
        name = entry.name.strip() if isinstance(entry.name, str) else ""
        if not name:
            problems.append(TopologyProblem(entry.where, "office", "office name is empty"))
            continue
        if len(name) > MAX_OFFICE_NAME:
            problems.append(
                TopologyProblem(entry.where, "office", f"name longer than {MAX_OFFICE_NAME}")
            )
            continue
        if name in offices:
            problems.append(
                TopologyProblem(
                    entry.where,
                    "office",
                    f"office {name!r} is already defined at {offices[name].where}",
                )
            )
            continue
        if entry.parent is not None and not isinstance(entry.parent, str):
            problems.append(TopologyProblem(entry.where, "parent", "parent must be a name"))
            continue
        parent = (entry.parent or "").strip() or None
        office_type = _parse_type(entry.type)
        if office_type is None:
            problems.append(
                TopologyProblem(
                    entry.where,
                    "type",
                    f"unknown office type {entry.type!r} (use Default, WiFi or VPN)",
                )
            )
        subnet_texts = entry.subnets if isinstance(entry.subnets, list) else [entry.subnets]
        subnets: list[IPNetwork] = []
        for text in subnet_texts:
            subnet, why = _parse_subnet(text)
            if subnet is None:
                problems.append(TopologyProblem(entry.where, "subnets", why))
            else:
                subnets.append(subnet)
        offices[name] = Office(
            name, parent, office_type or OfficeType.DEFAULT, tuple(subnets), entry.where
        )
    roots = [office for office in offices.values() if office.parent is None]
    if not offices and not problems:
        return default_topology()
    if len(roots) > 1:
        for office in roots[1:]:
            problems.append(
                TopologyProblem(
                    office.where,
                    "parent",
                    f"office {office.name!r} has no parent, but {roots[0].name!r} "
                    f"({roots[0].where}) is already the root; only the Central Office "
                    "has an empty parent",
                )
            )
    for office in offices.values():
        if office.parent is not None and office.parent not in offices:
            problems.append(
                TopologyProblem(office.where, "parent", f"unknown parent office {office.parent!r}")
            )
    problems.extend(_cycles(offices))
    if not roots and offices and not problems:
        first = next(iter(offices.values()))
        problems.append(
            TopologyProblem(
                first.where,
                "parent",
                "no root: one office (the Central Office) must have an empty parent",
            )
        )
    problems.extend(_overlaps(offices.values()))
    if problems:
        raise TopologyInvalid(problems)
    return Topology(_parents_first(roots[0], offices))


def _cycles(offices: Mapping[str, Office]) -> list[TopologyProblem]:
    problems: list[TopologyProblem] = []
    reported: set[str] = set()
    for start in offices.values():
        path = [start.name]
        current = start
        while current.parent is not None and current.parent in offices:
            if current.parent in path:
                cycle = [*path[path.index(current.parent) :], current.parent]
                key = min(cycle)
                if key not in reported:
                    reported.add(key)
                    problems.append(
                        TopologyProblem(
                            start.where, "parent", "parents form a cycle: " + " -> ".join(cycle)
                        )
                    )
                break
            path.append(current.parent)
            current = offices[current.parent]
    return problems


def _overlaps(offices: Iterable[Office]) -> list[TopologyProblem]:
    owned = sorted(
        ((subnet, office) for office in offices for subnet in office.subnets),
        key=lambda pair: (pair[0].version, int(pair[0].network_address), pair[0].prefixlen),
    )
    problems: list[TopologyProblem] = []
    widest: tuple[IPNetwork, Office] | None = None
    for subnet, office in owned:
        if (
            widest is not None
            and widest[0].version == subnet.version
            and int(subnet.network_address) <= int(widest[0].broadcast_address)
        ):
            other_subnet, other = widest
            problems.append(
                TopologyProblem(
                    office.where,
                    "subnets",
                    f"{subnet} overlaps {other_subnet} of office {other.name!r} ({other.where})",
                )
            )
        if (
            widest is None
            or widest[0].version != subnet.version
            or int(subnet.broadcast_address) > int(widest[0].broadcast_address)
        ):
            widest = (subnet, office)
    return problems


def _parents_first(root: Office, offices: Mapping[str, Office]) -> tuple[Office, ...]:
    """Offices in their given order, except that a parent always comes before a child."""
    ordered: list[Office] = [root]
    placed = {root.name}
    remaining = [office for office in offices.values() if office is not root]
    while remaining:
        waiting: list[Office] = []
        for office in remaining:
            if office.parent in placed:
                ordered.append(office)
                placed.add(office.name)
            else:
                waiting.append(office)
        remaining = waiting
    return tuple(ordered)


def check_server_address(topology: Topology, address: str) -> Office:
    """Return the Central Office if ``address`` is in one of its subnets.

    Otherwise raise ``ServerOutsideCentralOffice`` saying where the address is and which
    subnets would do.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ServerOutsideCentralOffice(f"P2P server address {address!r} is not an IP") from None
    root = topology.root
    if any(ip.version == subnet.version and ip in subnet for subnet in root.subnets):
        return root
    found = topology.office_for_address(ip)
    subnets = ", ".join(str(subnet) for subnet in root.subnets) or "none defined yet"
    where = f"it is in office {found.name!r}" if found else "it is in no office's subnet"
    raise ServerOutsideCentralOffice(
        f"a P2P server must sit in a subnet of the {root.name!r} office; {address} is not "
        f"({where}); {root.name} subnets: {subnets}. Add the server's subnet to "
        f"{root.name!r} in the topology, or move the server."
    )


def with_client_subnet(topology: Topology, address: str, subnet: str) -> tuple[Topology, Office]:
    """Place a client: its office, adding one named after ``subnet`` when none holds it.

    Auto-generated offices hang under the Central Office with type Default. Raises
    ``TopologyInvalid`` when ``subnet`` is malformed, does not hold ``address``, or
    overlaps an existing office's subnet.
    """
    found = topology.office_for_address(address)
    if found is not None:
        return topology, found
    network, why = _parse_subnet(subnet)
    where = f"client {address}"
    if network is None:
        raise TopologyInvalid([TopologyProblem(where, "subnet", why)])
    if ipaddress.ip_address(address) not in network:
        raise TopologyInvalid(
            [TopologyProblem(where, "subnet", f"{address} is not in its subnet {network}")]
        )
    name = str(network)
    if topology.get(name) is not None:
        name = f"{network} (auto)"
    office = Office(name, topology.root.name, OfficeType.DEFAULT, (network,), where)
    return build((*topology.offices, office)), office
