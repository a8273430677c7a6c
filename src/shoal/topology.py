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

Everything here is linear in the size of the tree (issue 13, row 11: a 2,000-deep
parent chain took 18 s): each office's depth is found once, walking up to the first
office already placed, and lookups by name and by address use indexes built once per
tree. Input is bounded: at most ``MAX_OFFICES`` offices (a file with more is refused as
soon as the row past the limit is read), ``MAX_SUBNETS`` subnets in all and
``MAX_DEPTH`` levels below the root, each refusal naming its limit. A tree loaded back
from the console's own database (``build``) is checked the same way but not limited,
so raising a limit never needs a migration and lowering one never locks a console out.
"""

from __future__ import annotations

import bisect
import csv
import io
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from shoal.core.errors import ShoalError
from shoal.wire.control_fields import OfficeType as WireOfficeType

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CENTRAL_OFFICE = "Central Office"
CSV_COLUMNS = ("office", "parent", "type", "subnets")
MAX_OFFICE_NAME = 200
MAX_OFFICES = 10_000
"""Offices in one tree, auto-generated ones included."""
MAX_SUBNETS = 100_000
"""Subnets in one tree, all offices together."""
MAX_DEPTH = 32
"""Levels below the root: the Central Office is at 0, its children at 1."""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet may run as a formula when a CSV cell starts with it (OWASP, "CSV
injection"): such a cell is exported with a leading apostrophe."""


class OfficeType(StrEnum):
    """How devices of an office share: broadcast, unicast peer lists, or not at all.

    This is the administrator's spelling (topology files, the API); the wire's
    ``shoal.wire.control.OfficeType`` is the source of truth of the kinds, a code per
    kind plus ``NONE`` (a device in no office), which no office can be configured with.
    Members carry the wire's names, so ``code`` derives one from the other.
    """

    DEFAULT = "Default"
    WIFI = "WiFi"
    VPN = "VPN"

    @property
    def code(self) -> WireOfficeType:
        """This type as REGISTERED carries it."""
        return WireOfficeType[self.name]


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
class _SubnetIndex:
    """Subnets of one IP version sorted by first address: a bisect finds the only one
    that can hold an address (subnets of a valid tree never overlap)."""

    starts: list[int]
    entries: list[tuple[int, int, Office]]

    @classmethod
    def of(cls, owned: Iterable[tuple[IPNetwork, Office]]) -> _SubnetIndex:
        entries = sorted(
            (
                (int(net.network_address), int(net.broadcast_address), office)
                for net, office in owned
            ),
            key=lambda entry: (entry[0], entry[1]),
        )
        return cls([entry[0] for entry in entries], entries)

    def find(self, address: int) -> Office | None:
        position = bisect.bisect_right(self.starts, address) - 1
        if position >= 0:
            _, last, office = self.entries[position]
            if address <= last:
                return office
        return None

    def overlapping(self, subnet: IPNetwork) -> Office | None:
        """An office with a subnet overlapping ``subnet``, or None."""
        first, last = int(subnet.network_address), int(subnet.broadcast_address)
        position = bisect.bisect_right(self.starts, last) - 1
        if position >= 0:
            _, other_last, office = self.entries[position]
            if other_last >= first:
                return office
        return None

    def with_subnet(self, subnet: IPNetwork, office: Office) -> _SubnetIndex:
        entry = (int(subnet.network_address), int(subnet.broadcast_address), office)
        position = bisect.bisect_right(self.starts, entry[0])
        return _SubnetIndex(
            [*self.starts[:position], entry[0], *self.starts[position:]],
            [*self.entries[:position], entry, *self.entries[position:]],
        )


def _subnet_indexes(offices: Iterable[Office]) -> dict[int, _SubnetIndex]:
    owned: dict[int, list[tuple[IPNetwork, Office]]] = {4: [], 6: []}
    for office in offices:
        for subnet in office.subnets:
            owned[subnet.version].append((subnet, office))
    return {version: _SubnetIndex.of(pairs) for version, pairs in owned.items()}


@dataclass(frozen=True, slots=True)
class Topology:
    """A validated office tree, parents before children."""

    offices: tuple[Office, ...]
    _by_name: dict[str, Office] = field(init=False, repr=False, compare=False)
    _by_subnet: dict[int, _SubnetIndex] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once per tree: lookups by name and by address are then O(1) / O(log n).
        object.__setattr__(self, "_by_name", {office.name: office for office in self.offices})
        object.__setattr__(self, "_by_subnet", _subnet_indexes(self.offices))

    @property
    def root(self) -> Office:
        return self.offices[0]

    def get(self, name: str) -> Office | None:
        return self._by_name.get(name)

    def office_for_address(self, address: str | IPAddress) -> Office | None:
        """The office one of whose subnets holds ``address``, or None."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        return self._by_subnet[ip.version].find(int(ip))

    def with_office(self, office: Office, subnet: IPNetwork) -> Topology:
        """This tree and a new leaf ``office`` holding one ``subnet``, which the caller
        has checked: its parent exists, its name and subnet are free. The indexes are
        extended, not rebuilt (auto-generated offices come one by one)."""
        grown: Topology = object.__new__(Topology)
        object.__setattr__(grown, "offices", (*self.offices, office))
        object.__setattr__(grown, "_by_name", {**self._by_name, office.name: office})
        indexes = dict(self._by_subnet)
        indexes[subnet.version] = indexes[subnet.version].with_subnet(subnet, office)
        object.__setattr__(grown, "_by_subnet", indexes)
        return grown

    def subtree(self, name: str) -> set[str]:
        """Names of ``name`` and every office below it."""
        below = {name}
        for office in self.offices:  # parents come first, so one pass is enough
            if office.parent in below:
                below.add(office.name)
        return below

    def to_csv(self) -> str:
        """The tree as CSV; a cell a spreadsheet would run as a formula is neutralised."""
        output = io.StringIO()
        writer = csv.writer(output, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for office in self.offices:
            writer.writerow(
                [
                    neutralise_formula(office.name),
                    neutralise_formula(office.parent or ""),
                    office.type.value,
                    " ".join(str(subnet) for subnet in office.subnets),
                ]
            )
        return output.getvalue()

    def to_json(self) -> dict[str, object]:
        return {"offices": [office.as_dict() for office in self.offices]}


def neutralise_formula(cell: str) -> str:
    """A CSV cell a spreadsheet will show as text: a leading apostrophe when it starts
    with a formula character (or with an apostrophe, so that ``restore_formula`` gives
    back exactly the original)."""
    if cell.startswith((*FORMULA_STARTS, "'")):
        return "'" + cell
    return cell


def restore_formula(cell: str) -> str:
    """The inverse of ``neutralise_formula``, so an exported file uploads unchanged."""
    if cell.startswith("'") and cell[1:].startswith((*FORMULA_STARTS, "'")):
        return cell[1:]
    return cell


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
            if len(raw) == MAX_OFFICES:
                raise TopologyInvalid([_too_many_offices(where)])
            cells = [
                row[index[column]] if index[column] < len(row) else "" for column in CSV_COLUMNS
            ]
            name, parent, office_type, subnets = cells
            raw.append(
                _RawOffice(
                    where,
                    restore_formula(name),
                    restore_formula(parent),
                    office_type,
                    subnets.replace(";", " ").split(),
                )
            )
    except csv.Error as error:
        raise TopologyInvalid(
            [TopologyProblem(f"line {reader.line_num}", "office", str(error))]
        ) from None
    return _validate(raw, limited=True)


def _too_many_offices(where: str) -> TopologyProblem:
    return TopologyProblem(
        where, "office", f"more than {MAX_OFFICES} offices: a topology holds at most {MAX_OFFICES}"
    )


def parse_json(document: object) -> Topology:
    """Validate a JSON topology (already decoded); entries are named ``entry N``."""
    entries = document.get("offices") if isinstance(document, Mapping) else document
    if not isinstance(entries, list):
        raise TopologyInvalid(
            [TopologyProblem("document", "offices", 'expected {"offices": [ ... ]}')]
        )
    if len(entries) > MAX_OFFICES:
        raise TopologyInvalid([_too_many_offices(f"entry {MAX_OFFICES + 1}")])
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
    return _validate(raw, limited=True)


def build(offices: Iterable[Office]) -> Topology:
    """Validate offices built in code (e.g. loaded from the console's database).

    Checked like an upload, but not held to the size limits (see the module docstring).
    """
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


def _validate(raw: Sequence[_RawOffice], limited: bool = False) -> Topology:
    problems: list[TopologyProblem] = []
    offices: dict[str, Office] = {}
    subnet_count = 0
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
        subnet_count += len(subnet_texts)
        if limited and subnet_count > MAX_SUBNETS:
            raise TopologyInvalid(
                [
                    *problems[:100],
                    TopologyProblem(
                        entry.where,
                        "subnets",
                        f"more than {MAX_SUBNETS} subnets in all: a topology holds at most "
                        f"{MAX_SUBNETS}",
                    ),
                ]
            )
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
    problems.extend(_cycles_and_depth(offices, MAX_DEPTH if limited else None))
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


def _cycles_and_depth(
    offices: Mapping[str, Office], max_depth: int | None
) -> list[TopologyProblem]:
    """Parent cycles (each once, with its path) and offices deeper than ``max_depth``.

    Linear: each office is walked over once. A walk goes up from an office until it
    meets an office whose depth is known (or the root, or an unknown parent), then
    gives every office on its path its depth on the way back.
    """
    problems: list[TopologyProblem] = []
    depth: dict[str, int | None] = {}  # None: above it is a cycle or an unknown parent
    for start in offices.values():
        path: list[str] = []
        on_path: dict[str, int] = {}
        name: str | None = start.name
        known: int | None = None
        while name is not None and name not in depth:
            office = offices.get(name)
            if office is None:  # unknown parent: reported elsewhere
                break
            if name in on_path:
                cycle = [*path[on_path[name] :], name]
                problems.append(
                    TopologyProblem(
                        offices[cycle[0]].where,
                        "parent",
                        "parents form a cycle: " + " -> ".join(cycle),
                    )
                )
                break
            on_path[name] = len(path)
            path.append(name)
            if office.parent is None:
                depth[name] = known = 0
                path.pop()
                break
            name = office.parent
        else:
            if name is not None:
                known = depth[name]
        for below in reversed(path):
            known = None if known is None else known + 1
            depth[below] = known
            if max_depth is not None and known == max_depth + 1:
                problems.append(
                    TopologyProblem(
                        offices[below].where,
                        "parent",
                        f"office {below!r} is {known} levels below the root: a topology "
                        f"holds at most {max_depth} levels",
                    )
                )
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
    """Offices in their given order, except that a parent always comes before a child
    (a child listed before its parent follows right after it). Linear."""
    ordered: list[Office] = [root]
    placed = {root.name}
    waiting: dict[str, list[Office]] = {}
    for office in offices.values():
        if office is root:
            continue
        if office.parent not in placed:
            waiting.setdefault(office.parent or "", []).append(office)
            continue
        ready = [office]
        while ready:
            next_office = ready.pop()
            ordered.append(next_office)
            placed.add(next_office.name)
            ready.extend(reversed(waiting.pop(next_office.name, [])))
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
    other = topology._by_subnet[network.version].overlapping(network)
    if other is not None:
        raise TopologyInvalid(
            [
                TopologyProblem(
                    where, "subnet", f"{network} overlaps a subnet of office {other.name!r}"
                )
            ]
        )
    if len(topology.offices) >= MAX_OFFICES:
        raise TopologyInvalid(
            [
                TopologyProblem(
                    where,
                    "subnet",
                    f"no office added for {network}: the topology already holds "
                    f"{len(topology.offices)} offices (at most {MAX_OFFICES})",
                )
            ]
        )
    name = str(network)
    if topology.get(name) is not None:
        name = f"{network} (auto)"
    if topology.get(name) is not None:
        raise TopologyInvalid([TopologyProblem(where, "subnet", f"office {name!r} exists")])
    office = Office(name, topology.root.name, OfficeType.DEFAULT, (network,), where)
    return topology.with_office(office, network), office
