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


def chain(levels: int) -> str:
    rows = ["Level 1,Central Office,,"]
    rows += [f"Level {level},Level {level - 1},," for level in range(2, levels + 1)]
    return HEADER + "Central Office,,,10.0.0.0/24\n" + "\n".join(rows) + "\n"


def test_depth_is_limited_and_the_limit_is_named():
    assert len(topology.parse_csv(chain(topology.MAX_DEPTH)).offices) == topology.MAX_DEPTH + 1
    found = problems_of(chain(topology.MAX_DEPTH + 5))
    assert found == [
        (
            f"line {topology.MAX_DEPTH + 3}",
            "parent",
            f"office 'Level {topology.MAX_DEPTH + 1}' is {topology.MAX_DEPTH + 1} levels below "
            f"the root: a topology holds at most {topology.MAX_DEPTH} levels",
        )
    ]


@pytest.mark.serial  # compares build times
def test_a_tree_loaded_back_is_checked_in_linear_time_but_not_limited():
    import time

    def chain_of(levels: int) -> list[topology.Office]:
        offices = [topology.Office("Central Office", None, OfficeType.DEFAULT, ())]
        for level in range(levels):
            offices.append(topology.Office(f"L{level}", offices[-1].name, OfficeType.DEFAULT, ()))
        return offices

    def fastest_build(offices: list[topology.Office]) -> float:
        spent = []
        for _ in range(3):
            started = time.perf_counter()
            topology.build(reversed(offices))  # children first: the worst order
            spent.append(time.perf_counter() - started)
        return min(spent)  # a loaded machine only adds time

    offices = chain_of(5000)
    # 0.04 s on an idle machine; 2.03 s once at load 20. Quadratic, 5000 levels take
    # seconds and 100x what 500 take (linear: 10x): slow AND superlinear fails.
    long, short = fastest_build(offices), fastest_build(chain_of(500))
    assert long < 2 or long < 30 * short, (long, short)
    tree = topology.build(reversed(offices))
    assert [office.name for office in tree.offices] == [office.name for office in offices]
    assert tree.subtree("L4998") == {"L4998", "L4999"}


def test_a_cycle_below_a_long_chain_is_reported_once():
    text = chain(10) + "A,B,,\nB,C,,\nC,A,,\nD,A,,\n"
    found = [p for p in problems_of(text) if "cycle" in p[2]]
    assert found == [("line 13", "parent", "parents form a cycle: A -> B -> C -> A")]


def test_office_and_subnet_counts_are_limited(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(topology.parsing, "MAX_OFFICES", 3)  # where the limit is read
    rows = "".join(f"O{n},Central Office,,10.{n + 1}.0.0/24\n" for n in range(3))
    found = problems_of(HEADER + "Central Office,,,10.0.0.0/24\n" + rows)
    assert found == [("line 5", "office", "more than 3 offices: a topology holds at most 3")]
    entries = [{"office": f"O{n}", "parent": "Central Office"} for n in range(3)]
    with pytest.raises(TopologyInvalid, match="entry 4, field 'office': more than 3 offices"):
        topology.parse_json({"offices": [{"office": "Central Office"}, *entries]})
    tree = topology.parse_csv(HEADER + "Central Office,,,10.0.0.0/24\nO1,Central Office,,\n")
    grown, _ = topology.with_client_subnet(tree, "10.5.0.1", "10.5.0.0/24")
    with pytest.raises(TopologyInvalid, match=r"already holds 3 offices \(at most 3\)"):
        topology.with_client_subnet(grown, "10.6.0.1", "10.6.0.0/24")
    monkeypatch.setattr(topology.parsing, "MAX_SUBNETS", 4)
    many = " ".join(f"10.{n}.0.0/16" for n in range(5))
    with pytest.raises(TopologyInvalid, match="more than 4 subnets in all"):
        topology.parse_csv(HEADER + f"Central Office,,,{many}\n")


def test_addresses_are_found_by_an_index_that_grows_with_client_subnets():
    tree = topology.parse_csv(CSV_TOPOLOGY + "V6,Central Office,,2001:db8::/48\n")
    assert tree.office_for_address("2001:db8::1").name == "V6"
    assert tree.office_for_address("10.9.255.255").name == "Remote"
    assert tree.office_for_address("10.10.0.0") is None
    grown, office = topology.with_client_subnet(tree, "10.0.1.9", "10.0.1.0/24")
    assert grown.office_for_address("10.0.1.200") == office and grown.get(office.name) == office
    assert tree.office_for_address("10.0.1.200") is None
    with pytest.raises(TopologyInvalid, match=r"10\.1\.0\.0/16 overlaps a subnet of office 'Paris"):
        topology.with_client_subnet(grown, "10.1.200.1", "10.1.0.0/16")


@pytest.mark.parametrize(
    "cell", ["=1+1", "+1", "-1", "@A1", "\tx", "\rx", "'", "'=x", "''", "plain", "", "a=b"]
)
def test_formula_cells_are_neutralised_and_restored_exactly(cell: str):
    exported = topology.neutralise_formula(cell)
    assert not exported.startswith(topology.FORMULA_STARTS)
    assert topology.restore_formula(exported) == cell


def test_every_office_type_has_its_wire_code() -> None:
    """The administrator's office types map one to one onto the wire's codes (NONE, for
    a device in no office, is the wire's only extra)."""
    from shoal.wire.control import OfficeType as WireOfficeType

    codes = {office_type.code for office_type in OfficeType}
    assert codes == set(WireOfficeType) - {WireOfficeType.NONE}
    assert OfficeType.WIFI.code is WireOfficeType.WIFI
