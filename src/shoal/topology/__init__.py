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

The tree and its types are in ``model``, reading and validation in ``parsing``,
placing a server or a client in ``placement``; this package re-exports them all.
"""

from __future__ import annotations

from shoal.topology.model import (
    CENTRAL_OFFICE,
    CSV_COLUMNS,
    FORMULA_STARTS,
    IPAddress,
    IPNetwork,
    Office,
    OfficeType,
    ServerOutsideCentralOffice,
    Topology,
    TopologyInvalid,
    TopologyProblem,
    default_topology,
    neutralise_formula,
    restore_formula,
)
from shoal.topology.parsing import (
    MAX_DEPTH,
    MAX_OFFICE_NAME,
    MAX_OFFICES,
    MAX_SUBNETS,
    build,
    parse_csv,
    parse_json,
)
from shoal.topology.placement import check_server_address, with_client_subnet

__all__ = [
    "CENTRAL_OFFICE",
    "CSV_COLUMNS",
    "FORMULA_STARTS",
    "MAX_DEPTH",
    "MAX_OFFICES",
    "MAX_OFFICE_NAME",
    "MAX_SUBNETS",
    "IPAddress",
    "IPNetwork",
    "Office",
    "OfficeType",
    "ServerOutsideCentralOffice",
    "Topology",
    "TopologyInvalid",
    "TopologyProblem",
    "build",
    "check_server_address",
    "default_topology",
    "neutralise_formula",
    "parse_csv",
    "parse_json",
    "restore_formula",
    "with_client_subnet",
]
