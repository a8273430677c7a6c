"""Install specifications and install results in the console (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
from datetime import date

from shoal.assignments import assigned_entries
from shoal.console.services import installs
from shoal.core.ids import ContentId

from .conftest import CSV_TOPOLOGY, Harness
from .test_console_api import register_server

PACKAGE = os.urandom(2 * 65536 + 5)
SPEC = {"command": "dpkg -i {file}", "extension": ".deb", "uninstall": "dpkg -r sample"}


def report(console: Harness, device_id: str, content: list, installs: list) -> dict:
    answer = console.client.post(
        "/api/v1/link/clients",
        json={
            "clients": [
                {
                    "device_id": device_id,
                    "hostname": f"pc-{device_id}",
                    "address": "10.1.0.10" if device_id == "d1" else "10.1.0.11",
                    "subnet": "10.1.0.0/24",
                    "version": "0.1.0",
                    "content": content,
                    "installs": installs,
                }
            ]
        },
        headers=console.link_headers(),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def items(console: Harness, path: str, **params: str) -> list[dict]:
    """Every row of a paged listing (asserting its page fields)."""
    answer = console.get(path, params=params)
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["total"] == len(page["items"]) and page["offset"] == 0
    return page["items"]


def site(console: Harness) -> tuple[dict, dict]:
    """Two devices, a version uploaded with its install spec, assigned to everyone."""
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=10, expires=date(2027, 1, 1))
    register_server(console)
    report(console, "d1", [], [])
    report(console, "d2", [], [])
    version = console.upload("Sample", "1.0", PACKAGE, install=json.dumps(SPEC))
    assert version.status_code == 201, version.text
    assignment = console.post(
        "/api/v1/assignments", json={"version_id": version.json()["id"], "target_kind": "everyone"}
    )
    assert assignment.status_code == 201, assignment.text
    return version.json(), assignment.json()


def test_the_spec_given_at_upload_is_stored_and_signed_into_the_document(console: Harness):
    version, _ = site(console)
    assert version["install"]["command"] == "dpkg -i {file}"
    assert version["install"]["success_codes"] == [0]
    assert version["install"]["reboot_codes"] == [3010]
    signed = console.client.get("/api/v1/link/assignments", headers=console.link_headers())
    entries = assigned_entries(json.dumps(signed.json()).encode())
    (entry,) = entries[ContentId.from_hex(version["content_id"])]
    assert entry["install"]["command"] == "dpkg -i {file}"
    assert "Sample" not in json.dumps(entry)  # the document names no application


def test_a_spec_is_validated_by_field_and_can_be_changed_and_removed(console: Harness):
    version, _ = site(console)
    path = f"/api/v1/versions/{version['id']}/install"
    bad = console.put(path, json={"command": "dpkg -i package.deb"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("command:")
    bad_upload = console.upload("Other", "1.0", PACKAGE, install='{"command": 1}')
    assert bad_upload.status_code == 422
    before = console.client.get("/api/v1/link/assignments", headers=console.link_headers())
    changed = console.put(path, json={"command": "msiexec /i {file} /qn", "extension": ".msi"})
    assert changed.status_code == 200 and changed.json()["install"]["extension"] == ".msi"
    after = console.client.get("/api/v1/link/assignments", headers=console.link_headers())
    assert after.json()["document"] != before.json()["document"]  # signed again
    assert "msiexec" in after.json()["document"]
    assert console.delete(path).status_code == 204
    assert console.get(path).json()["install"] is None
    assert console.get("/api/v1/versions/99999/install").status_code == 404


def test_results_per_assignment_and_device_with_derived_pending_and_downloading(
    console: Harness,
):
    version, assignment = site(console)
    content_id = version["content_id"]
    rows = items(console, "/api/v1/installs")
    assert {(row["device_id"], row["state"]) for row in rows} == {
        ("d1", "pending"),
        ("d2", "pending"),
    }
    report(console, "d2", [{"content_id": content_id, "bytes_done": 65536, "complete": False}], [])
    failed = {
        "content_id": content_id,
        "state": "failed",
        "attempts": 3,
        "exit_code": 100,
        "output_tail": "E: dependency problems",
    }
    report(console, "d1", [], [failed])
    rows = {
        row["device_id"]: row
        for row in items(console, f"/api/v1/assignments/{assignment['id']}/installs")
    }
    assert rows["d2"]["state"] == "downloading"
    assert (rows["d1"]["state"], rows["d1"]["exit_code"], rows["d1"]["attempts"]) == (
        "failed",
        100,
        3,
    )
    assert rows["d1"]["output_tail"] == "E: dependency problems"
    assert rows["d1"]["application"] == "Sample" and rows["d1"]["hostname"] == "pc-d1"
    only_failed = items(console, "/api/v1/installs", state="failed")
    assert [row["device_id"] for row in only_failed] == ["d1"]
    by_device = items(console, "/api/v1/devices/d2/installs")
    assert [row["state"] for row in by_device] == ["downloading"]
    assert items(console, "/api/v1/installs", application="Nope") == []
    assert console.get("/api/v1/devices/nope/installs").status_code == 404


def test_an_invalid_install_record_is_refused_and_named_the_others_applied(console: Harness):
    version, _ = site(console)
    content_id = version["content_id"]
    bad = {"content_id": content_id, "state": "hacked", "attempts": 1, "exit_code": 0}
    answer = report(console, "d1", [], [bad])
    (refused,) = answer["refused"]
    assert refused["id"] == "d1" and refused["problems"][0]["field"].startswith("installs.0")
    good = {**bad, "state": "installed"}
    report(console, "d2", [], [good])
    rows = {row["device_id"]: row["state"] for row in items(console, "/api/v1/installs")}
    assert rows == {"d1": "pending", "d2": "installed"}


def test_an_uninstall_after_the_assignment_is_removed_is_shown(console: Harness):
    version, assignment = site(console)
    content_id = version["content_id"]
    installed = {"content_id": content_id, "state": "installed", "attempts": 1, "exit_code": 0}
    report(console, "d1", [], [installed])
    assert console.delete(f"/api/v1/assignments/{assignment['id']}").status_code == 204
    assert items(console, "/api/v1/installs") == []  # not assigned, not uninstalled yet
    report(console, "d1", [], [{**installed, "state": "uninstalled"}])
    (row,) = items(console, "/api/v1/installs")
    assert (row["assignment_id"], row["device_id"], row["state"]) == (None, "d1", "uninstalled")
    assert row["application"] == "Sample"
    assert items(console, "/api/v1/devices/d1/installs", state="uninstalled")
    assert items(console, "/api/v1/installs", state="failed") == []


def test_an_office_assignment_reaches_the_offices_below_and_lists_page_by_page(
    console: Harness,
):
    version, _ = site(console)
    # A third device, in Paris WiFi (10.1.1.0/24), an office below Paris.
    answer = console.client.post(
        "/api/v1/link/clients",
        json={
            "clients": [
                {
                    "device_id": "d3",
                    "hostname": "pc-d3",
                    "address": "10.1.1.7",
                    "subnet": "10.1.1.0/24",
                    "version": "0.1.0",
                    "content": [],
                    "installs": [],
                }
            ]
        },
        headers=console.link_headers(),
    )
    assert answer.status_code == 200, answer.text
    to_paris = console.post(
        "/api/v1/assignments",
        json={"version_id": version["id"], "target_kind": "office", "target": "Paris"},
    ).json()
    reached = items(console, f"/api/v1/assignments/{to_paris['id']}/installs")
    assert sorted((row["device_id"], row["office"]) for row in reached) == [
        ("d1", "Paris"),
        ("d2", "Paris"),
        ("d3", "Paris WiFi"),
    ]
    # Two assignments x three devices, two rows a page, newest assignment first.
    seen = []
    for offset in (0, 2, 4):
        page = console.get("/api/v1/installs", params={"limit": 2, "offset": offset}).json()
        assert (page["total"], page["limit"], page["offset"]) == (6, 2, offset)
        seen += [(row["assignment_id"], row["device_id"]) for row in page["items"]]
    assert seen[:3] == [(to_paris["id"], "d1"), (to_paris["id"], "d2"), (to_paris["id"], "d3")]
    assert len(set(seen)) == 6


def test_failed_installs_need_attention_on_the_dashboard(console: Harness):
    version, _ = site(console)
    kinds = [item["kind"] for item in console.get("/api/v1/summary").json()["attention"]]
    assert "install_failed" not in kinds
    failed = {"content_id": version["content_id"], "state": "failed", "attempts": 3}
    report(console, "d1", [], [{**failed, "exit_code": 1603, "output_tail": "Fatal"}])
    report(console, "d2", [], [{**failed, "exit_code": 1, "output_tail": "no"}])
    (item,) = [
        item
        for item in console.get("/api/v1/summary").json()["attention"]
        if item["kind"] == "install_failed"
    ]
    assert item["severity"] == "error" and item["link"] == "#assignments"
    assert item["message"].startswith("2 installs failed on 2 devices")


def test_the_unfiltered_listing_cut_by_assignment_matches_the_single_query(console: Harness):
    """The unfiltered install results are paged assignment by assignment (fast on a large
    site): every page, whatever its size, holds exactly the rows, in the order, that the
    one query over every (assignment, device) pair gives."""
    version, everyone = site(console)
    content_id = version["content_id"]
    other = console.upload("Other", "2.0", PACKAGE + b"other").json()
    report(console, "d3", [], [])  # a third device (not in an office: 10.1.0.11 too)
    to_paris = console.post(
        "/api/v1/assignments",
        json={"version_id": version["id"], "target_kind": "office", "target": "Paris"},
    ).json()
    to_d2 = console.post(
        "/api/v1/assignments",
        json={"version_id": other["id"], "target_kind": "device", "target": "d2"},
    ).json()
    to_nobody = console.post(
        "/api/v1/assignments",
        json={"version_id": other["id"], "target_kind": "office", "target": "Remote"},
    ).json()
    # An uninstall of a version no longer assigned to that device.
    uninstalled = {"content_id": other["content_id"], "state": "uninstalled", "attempts": 1}
    report(console, "d1", [], [uninstalled])
    report(console, "d2", [{"content_id": content_id, "bytes_done": 10, "complete": False}], [])
    assert {to_paris["id"], to_d2["id"], to_nobody["id"], everyone["id"]}

    with console.state.sessions() as session:
        expected = installs.list_installs(session, installs.InstallFilter(), 1000, 0)
    assert expected.total == 3 + 3 + 1 + 0 + 1  # everyone, Paris, d2, Remote, uninstall
    rows = [(row.assignment_id, row.device_id, row.state) for row in expected.items]
    assert rows[-1] == (None, "d1", "uninstalled")
    for limit in (1, 4):
        seen = []
        for offset in range(0, expected.total + limit, limit):
            page = console.get("/api/v1/installs", params={"limit": limit, "offset": offset})
            assert page.status_code == 200, page.text
            assert page.json()["total"] == expected.total
            seen += [(r["assignment_id"], r["device_id"], r["state"]) for r in page.json()["items"]]
        assert seen == rows, limit
