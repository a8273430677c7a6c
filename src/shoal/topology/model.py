"""Offices and their subnets as one tree (``shoal.topology``): the types, lookups by
name and by address, and the tree written out as CSV or JSON."""

from __future__ import annotations

import bisect
import csv
import io
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from shoal.core.errors import ShoalError
from shoal.wire.control_fields import OfficeType as WireOfficeType

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CENTRAL_OFFICE = "Central Office"
CSV_COLUMNS = ("office", "parent", "type", "subnets")
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
