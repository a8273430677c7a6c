"""Topology parsing and validation (pure functions, no database)."""

from __future__ import annotations

import pytest

from shoal import topology
from shoal.topology import OfficeType, TopologyInvalid

from .conftest import CSV_TOPOLOGY

HEADER = "office,parent,type,subnets\n"


def problems_of(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(TopologyInvalid) as caught:
        topology.parse_csv(text)
    return [(p.where, p.field, p.message) for p in caught.value.problems]


def test_csv_is_parsed_into_a_tree_parents_first():
    tree = topology.parse_csv(CSV_TOPOLOGY)
    assert tree.root.name == "Central Office"
    assert tree.get("Paris WiFi").type is OfficeType.WIFI
    assert tree.office_for_address("10.1.1.200").name == "Paris WiFi"
    assert tree.office_for_address("192.168.1.1") is None
    assert tree.subtree("Paris") == {"Paris", "Paris WiFi"}
    assert tree.to_csv() == CSV_TOPOLOGY


def test_children_listed_before_parents_are_accepted():
    tree = topology.parse_csv(HEADER + "Branch,Central Office,,10.1.0.0/24\nCentral Office,,,\n")
    assert [office.name for office in tree.offices] == ["Central Office", "Branch"]


def test_bad_cidr_names_line_and_field():
    found = problems_of(
        HEADER + "Central Office,,Default,10.0.0.0/24\nLyon,Central Office,,10.2.0.1/24\n"
    )
    assert found == [
        ("line 3", "subnets", "'10.2.0.1/24' has host bits set; did you mean 10.2.0.0/24?")
    ]
    found = problems_of(HEADER + "Central Office,,Default,banana\n")
    assert found[0][:2] == ("line 2", "subnets") and "not a CIDR" in found[0][2]


def test_overlapping_subnets_name_both_offices():
    found = problems_of(HEADER + "Central Office,,,10.0.0.0/8\nParis,Central Office,,10.1.0.0/24\n")
    assert found == [
        ("line 3", "subnets", "10.1.0.0/24 overlaps 10.0.0.0/8 of office 'Central Office' (line 2)")
    ]


def test_unknown_parent_and_type():
    found = problems_of(HEADER + "Central Office,,,\nParis,Nowhere,Castle,\n")
    assert ("line 3", "type", "unknown office type 'Castle' (use Default, WiFi or VPN)") in found
    assert ("line 3", "parent", "unknown parent office 'Nowhere'") in found


def test_cycle_is_reported_with_its_path():
    found = problems_of(HEADER + "Central Office,,,\nA,B,,\nB,A,,\n")
    assert any(field == "parent" and "cycle: A -> B -> A" in message for _, field, message in found)


def test_two_roots_and_duplicate_names():
    found = problems_of(HEADER + "Central Office,,,\nOther,,,\nCentral Office,,,\n")
    assert any(where == "line 3" and "already the root" in message for where, _, message in found)
    assert any(
        where == "line 4" and "already defined at line 2" in message for where, _, message in found
    )


def test_missing_column_is_named():
    found = problems_of("office,parent,type\nCentral Office,,\n")
    assert found == [
        ("line 1", "subnets", "missing column (header must hold office,parent,type,subnets)")
    ]


def test_json_problems_name_the_entry():
    with pytest.raises(TopologyInvalid) as caught:
        topology.parse_json(
            {
                "offices": [
                    {"office": "Central Office"},
                    {"office": "X", "parent": "Central Office", "subnets": ["300.0.0.0/8"]},
                ]
            }
        )
    (problem,) = caught.value.problems
    assert (problem.where, problem.field) == ("entry 2", "subnets")


def test_server_must_sit_in_a_central_office_subnet():
    tree = topology.parse_csv(CSV_TOPOLOGY)
    assert topology.check_server_address(tree, "10.0.0.7").name == "Central Office"
    with pytest.raises(topology.ServerOutsideCentralOffice, match="in office 'Paris'"):
        topology.check_server_address(tree, "10.1.0.7")
    with pytest.raises(topology.ServerOutsideCentralOffice, match="none defined yet"):
        topology.check_server_address(topology.default_topology(), "10.1.0.7")


def test_a_new_client_subnet_becomes_an_office_once():
    tree = topology.parse_csv(CSV_TOPOLOGY)
    grown, office = topology.with_client_subnet(tree, "172.16.5.9", "172.16.5.0/24")
    assert office.name == "172.16.5.0/24" and office.parent == "Central Office"
    again, same = topology.with_client_subnet(grown, "172.16.5.10", "172.16.5.0/24")
    assert again is grown and same == office
    placed, known = topology.with_client_subnet(tree, "10.1.0.3", "10.1.0.0/24")
    assert placed is tree and known.name == "Paris"
    with pytest.raises(TopologyInvalid, match="overlaps"):
        topology.with_client_subnet(tree, "10.200.0.1", "10.0.0.0/8")
