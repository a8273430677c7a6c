"""Install specifications and install results in the console (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
from datetime import date

from shoal.assignments import assigned_entries
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
    rows = console.get("/api/v1/installs").json()
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
        for row in console.get(f"/api/v1/assignments/{assignment['id']}/installs").json()
    }
    assert rows["d2"]["state"] == "downloading"
    assert (rows["d1"]["state"], rows["d1"]["exit_code"], rows["d1"]["attempts"]) == (
        "failed",
        100,
        3,
    )
    assert rows["d1"]["output_tail"] == "E: dependency problems"
    assert rows["d1"]["application"] == "Sample" and rows["d1"]["hostname"] == "pc-d1"
    only_failed = console.get("/api/v1/installs", params={"state": "failed"}).json()
    assert [row["device_id"] for row in only_failed] == ["d1"]
    by_device = console.get("/api/v1/devices/d2/installs").json()
    assert [row["state"] for row in by_device] == ["downloading"]
    assert console.get("/api/v1/installs", params={"application": "Nope"}).json() == []
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
    rows = {row["device_id"]: row["state"] for row in console.get("/api/v1/installs").json()}
    assert rows == {"d1": "pending", "d2": "installed"}


def test_an_uninstall_after_the_assignment_is_removed_is_shown(console: Harness):
    version, assignment = site(console)
    content_id = version["content_id"]
    installed = {"content_id": content_id, "state": "installed", "attempts": 1, "exit_code": 0}
    report(console, "d1", [], [installed])
    assert console.delete(f"/api/v1/assignments/{assignment['id']}").status_code == 204
    assert console.get("/api/v1/installs").json() == []  # not assigned, not uninstalled yet
    report(console, "d1", [], [{**installed, "state": "uninstalled"}])
    (row,) = console.get("/api/v1/installs").json()
    assert (row["assignment_id"], row["device_id"], row["state"]) == (None, "d1", "uninstalled")
    assert row["application"] == "Sample"
    assert console.get("/api/v1/devices/d1/installs", params={"state": "uninstalled"}).json()
    assert console.get("/api/v1/installs", params={"state": "failed"}).json() == []
