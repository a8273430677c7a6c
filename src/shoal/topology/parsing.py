"""Reading a topology (``shoal.topology``): CSV and JSON files, and trees loaded back
from the console's database, validated with every problem named by place and field."""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shoal.topology.model import (
    CSV_COLUMNS,
    IPNetwork,
    Office,
    OfficeType,
    Topology,
    TopologyInvalid,
    TopologyProblem,
    default_topology,
    restore_formula,
)

MAX_OFFICE_NAME = 200
MAX_OFFICES = 10_000
"""Offices in one tree, auto-generated ones included."""
MAX_SUBNETS = 100_000
"""Subnets in one tree, all offices together."""
MAX_DEPTH = 32
"""Levels below the root: the Central Office is at 0, its children at 1."""


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


def parse_subnet(text: object) -> tuple[IPNetwork | None, str]:
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
            subnet, why = parse_subnet(text)
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
