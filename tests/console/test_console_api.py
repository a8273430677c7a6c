"""The console's REST API, on SQLite and on PostgreSQL (the ``console`` fixture runs both)."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import date
from pathlib import Path

import pytest

from shoal.console.state import ADMIN_PASSWORD_VARIABLE, ConsoleConfig, open_console
from shoal.core.packing import pack_bytes
from shoal.core.signing import verify_manifest_file

from .conftest import CSV_TOPOLOGY, FakeClock, Harness
from .vendor import vendor_public_key_file

PACKAGE = os.urandom(3 * 65536 + 123)


def register_server(console: Harness, address: str = "10.0.0.5") -> dict:
    answer = console.client.post(
        "/api/v1/link/register",
        json={"server_id": "srv-1", "name": "central", "address": address},
        headers=console.link_headers(),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def report_clients(console: Harness, *clients: tuple[str, str, str], content: list | None = None):
    return console.client.post(
        "/api/v1/link/clients",
        json={
            "clients": [
                {
                    "device_id": device_id,
                    "hostname": device_id,
                    "address": address,
                    "subnet": subnet,
                    "version": "0.1.0",
                    "content": content or [],
                }
                for device_id, address, subnet in clients
            ]
        },
        headers=console.link_headers(),
    )


# --- authentication -------------------------------------------------------------------


def test_requests_without_credentials_are_refused_with_how_to_authenticate(console: Harness):
    answer = console.client.get("/api/v1/applications")
    assert answer.status_code == 401
    assert "Authorization: Bearer" in answer.json()["detail"]
    wrong = console.client.get("/api/v1/applications", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "not recognised" in wrong.json()["detail"]


def test_session_cookie_logs_in_and_out(console: Harness):
    client = console.client
    refused = client.post("/api/v1/auth/login", json={"username": "admin", "password": "bad"})
    assert refused.status_code == 401
    assert (
        client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": "a long test password"}
        ).status_code
        == 200
    )
    assert client.get("/api/v1/auth/me").json()["authenticated_by"] == "session"
    logout = client.post("/api/v1/auth/logout", headers={"Origin": "https://testserver"})
    assert logout.status_code == 204
    client.cookies.clear()
    assert client.get("/api/v1/auth/me").status_code == 401


def test_session_expires_by_the_console_clock(console: Harness):
    client = console.client
    client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": "a long test password"}
    )
    console.clock.advance(hours=13)
    answer = client.get("/api/v1/auth/me")
    assert answer.status_code == 401
    assert "expired" in answer.json()["detail"]


def test_revoked_token_no_longer_works(console: Harness):
    created = console.post("/api/v1/tokens", json={"name": "ci"}).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert console.client.get("/api/v1/auth/me", headers=headers).status_code == 200
    assert console.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    assert console.client.get("/api/v1/auth/me", headers=headers).status_code == 401


def test_first_admin_password_is_generated_once_when_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
):
    monkeypatch.delenv(ADMIN_PASSWORD_VARIABLE, raising=False)
    config = ConsoleConfig(
        data_dir=tmp_path / "fresh", vendor_public_key=vendor_public_key_file(tmp_path)
    )
    first = open_console(config, clock)
    password = first.generated_admin_password
    first.close()
    again = open_console(config, clock)
    assert password and again.generated_admin_password is None
    from .conftest import TestClient, create_app

    with TestClient(create_app(again), base_url="https://testserver") as client:
        login = client.post("/api/v1/auth/login", json={"username": "admin", "password": password})
        assert login.status_code == 200
    again.close()
    assert (tmp_path / "fresh" / "tls" / "cert.pem").exists()
    assert oct((tmp_path / "fresh" / "server-auth.key").stat().st_mode & 0o777) == "0o600"


# --- applications ---------------------------------------------------------------------


def test_upload_packs_and_signs_the_manifest(console: Harness):
    answer = console.upload("Editor", "1.0", PACKAGE, chunk_size=65536, confidential="false")
    assert answer.status_code == 201, answer.text
    version = answer.json()
    expected = pack_bytes(PACKAGE, 65536)
    assert version["content_id"] == expected.content_id.hex
    assert version["sha256"] == hashlib.sha256(PACKAGE).hexdigest()
    assert version["chunks"] == 4 and version["confidential"] is False
    manifest_bytes = console.get(
        f"/api/v1/applications/{version['application_id']}/versions/{version['id']}/manifest"
    ).content
    manifest = verify_manifest_file(manifest_bytes, [console.state.signing_key.verify_key])
    assert manifest == expected


def test_versions_accumulate_and_a_duplicate_version_is_refused(console: Harness):
    assert console.upload("Editor", "1.0", b"one").status_code == 201
    assert console.upload("Editor", "1.1", b"two").status_code == 201
    duplicate = console.upload("Editor", "1.1", b"three")
    assert duplicate.status_code == 409
    assert "already has a version '1.1'" in duplicate.json()["detail"]
    (application,) = console.get("/api/v1/applications").json()["items"]
    assert [v["version"] for v in application["versions"]] == ["1.0", "1.1"]


def test_delete_removes_rows_assignments_and_unshared_content(console: Harness):
    first = console.upload("Editor", "1.0", b"shared bytes").json()
    console.upload("Viewer", "1.0", b"shared bytes")  # same content, other application
    only = console.upload("Editor", "2.0", b"only editor").json()
    assignment = console.post(
        "/api/v1/assignments", json={"version_id": only["id"], "target_kind": "everyone"}
    ).json()
    assert console.delete(f"/api/v1/applications/{first['application_id']}").status_code == 204
    assert console.get(f"/api/v1/assignments/{assignment['id']}").status_code == 404
    assert [app["name"] for app in console.get("/api/v1/applications").json()["items"]] == [
        "Viewer"
    ]
    content = console.state.content
    assert content.data_path(first["content_id"]).exists()  # still used by Viewer
    assert not content.data_path(only["content_id"]).exists()


def test_confidential_flag_is_recorded(console: Harness):
    version = console.upload("Payroll", "1.0", b"secret").json()
    assert version["confidential"] is False
    changed = console.patch(
        f"/api/v1/applications/{version['application_id']}", json={"confidential": True}
    )
    assert changed.json()["confidential"] is True
    assert (
        console.get("/api/v1/applications").json()["items"][0]["versions"][0]["confidential"]
        is True
    )


def test_bad_upload_parameters_say_what_is_wrong(console: Harness):
    answer = console.upload("Editor", "1.0", b"x", chunk_size=100000)
    assert answer.status_code == 422
    assert "chunk_size" in answer.json()["detail"]
    missing = console.client.post(
        "/api/v1/applications", params={"name": "A"}, content=b"x", headers=console.headers
    )
    assert missing.status_code == 422
    assert "version" in missing.json()["detail"]


# --- licence, devices, overage --------------------------------------------------------


def test_licence_activates_servers_and_reports_overage(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    assert register_server(console)["activated"] is False
    saved = console.save_licence(seats=2, expires=date(2026, 12, 31))
    assert saved.status_code == 200 and saved.json()["active"] is True
    assert console.get("/api/v1/servers").json()["items"][0]["activated"] is True
    answer = report_clients(
        console,
        ("d1", "10.1.0.10", "10.1.0.0/24"),
        ("d2", "10.1.0.11", "10.1.0.0/24"),
        ("d3", "10.1.1.12", "10.1.1.0/24"),
    )
    assert answer.status_code == 200, answer.text
    licence = console.get("/api/v1/license").json()
    assert licence["seats_used"] == 3 and licence["seats_over"] == 1
    assert licence["state"] == "overage" and "1 seat over" in licence["message"]
    assert answer.json()["licence"]["seats_over"] == 1
    assert console.get("/api/v1/status").json()["licence"]["seats_over"] == 1
    assert console.delete("/api/v1/devices/d3").status_code == 204
    assert console.get("/api/v1/license").json()["seats_over"] == 0


def test_expired_licence_is_explained_and_refuses_new_devices(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=10, expires=date(2026, 6, 30))
    register_server(console)
    report_clients(console, ("old", "10.1.0.10", "10.1.0.0/24"))
    console.clock.advance(days=30)  # 2026-07-01
    licence = console.get("/api/v1/license").json()
    assert licence["state"] == "expired" and licence["active"] is False
    assert "expired on 2026-06-30 (1 day ago)" in licence["message"]
    answer = report_clients(
        console, ("old", "10.1.0.10", "10.1.0.0/24"), ("new", "10.1.0.11", "10.1.0.0/24")
    ).json()
    placed = {client["device_id"]: client for client in answer["clients"]}
    assert placed["old"]["licensed"] is True
    assert placed["new"]["licensed"] is False and "expired" in placed["new"]["message"]


def test_licence_signed_by_another_vendor_is_refused(console: Harness):
    from shoal.core.signing import SigningKey
    from shoal.licensing import issue_licence

    foreign = issue_licence(
        SigningKey.generate(), "Mallory", 1000, date(2030, 1, 1), date(2026, 1, 1)
    )
    answer = console.put("/api/v1/license", json={"key": foreign})
    assert answer.status_code == 422
    assert "trusts vendor key" in answer.json()["detail"]
    garbage = console.put("/api/v1/license", json={"key": "SHOAL1.abc"})
    assert "not a shoal licence key" in garbage.json()["detail"]


def test_devices_show_office_status_and_cached_content(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=10, expires=date(2027, 1, 1))
    register_server(console)
    content_id = "ab" * 32
    report_clients(
        console,
        ("d1", "10.1.1.7", "10.1.1.0/24"),
        content=[{"content_id": content_id, "bytes_done": 100, "complete": False}],
    )
    device = console.get("/api/v1/devices/d1").json()
    assert device["office"] == "Paris WiFi" and device["status"] == "online"
    assert device["cached_content"] == [
        {"content_id": content_id, "bytes_done": 100, "complete": False}
    ]
    console.clock.advance(hours=1)
    assert console.get("/api/v1/devices/d1").json()["status"] == "offline"
    assert [
        d["id"] for d in console.get("/api/v1/devices", params={"office": "Paris"}).json()["items"]
    ] == []


def test_new_client_subnet_becomes_an_office(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=10, expires=date(2027, 1, 1))
    register_server(console)
    answer = report_clients(console, ("d1", "10.44.3.9", "10.44.3.0/24")).json()
    assert answer["clients"][0]["office"] == "10.44.3.0/24"
    offices = {
        office["office"]: office for office in console.get("/api/v1/offices").json()["items"]
    }
    assert offices["10.44.3.0/24"]["auto_generated"] is True
    assert offices["10.44.3.0/24"]["parent"] == "Central Office"
    assert offices["10.44.3.0/24"]["devices"] == 1


# --- assignments ----------------------------------------------------------------------


def test_assignment_progress_is_aggregated_from_server_reports(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=10, expires=date(2027, 1, 1))
    register_server(console)
    version = console.upload("Editor", "1.0", b"x" * 1000).json()
    report_clients(
        console,
        ("p1", "10.1.0.1", "10.1.0.0/24"),
        ("w1", "10.1.1.1", "10.1.1.0/24"),
        ("other", "10.0.0.9", "10.0.0.0/24"),
    )
    assignment = console.post(
        "/api/v1/assignments",
        json={"version_id": version["id"], "target_kind": "office", "target": "Paris"},
    )
    assert assignment.status_code == 201, assignment.text
    progress = assignment.json()["progress"]
    assert progress["devices_targeted"] == 2 and progress["bytes_done"] == 0
    cid = version["content_id"]
    report_clients(
        console,
        ("p1", "10.1.0.1", "10.1.0.0/24"),
        content=[{"content_id": cid, "bytes_done": 1000, "complete": True}],
    )
    report_clients(
        console,
        ("w1", "10.1.1.1", "10.1.1.0/24"),
        content=[{"content_id": cid, "bytes_done": 500, "complete": False}],
    )
    progress = console.get(f"/api/v1/assignments/{assignment.json()['id']}").json()["progress"]
    assert progress == {
        "devices_targeted": 2,
        "devices_complete": 1,
        "bytes_done": 1500,
        "bytes_total": 2000,
        "percent": 75.0,
    }


def test_assignment_targets_are_checked(console: Harness):
    version = console.upload("Editor", "1.0", b"x").json()
    cases = [
        ({"version_id": 999, "target_kind": "everyone"}, "version_id"),
        ({"version_id": version["id"], "target_kind": "office", "target": "Mars"}, "no office"),
        ({"version_id": version["id"], "target_kind": "device", "target": "ghost"}, "no device"),
        ({"version_id": version["id"], "target_kind": "office"}, "name the office"),
        ({"version_id": version["id"], "target_kind": "everyone", "target": "x"}, "empty"),
    ]
    for body, words in cases:
        answer = console.post("/api/v1/assignments", json=body)
        assert answer.status_code == 422, body
        assert words in answer.json()["detail"], answer.json()


# --- topology -------------------------------------------------------------------------


def test_topology_round_trips_as_csv_and_json(console: Harness):
    assert console.set_topology(CSV_TOPOLOGY).status_code == 200
    csv_text = console.get("/api/v1/topology", params={"format": "csv"}).text
    assert csv_text == CSV_TOPOLOGY
    document = console.get("/api/v1/topology").json()
    offices = [
        {k: o[k] for k in ("office", "parent", "type", "subnets")} for o in document["offices"]
    ]
    assert console.put("/api/v1/topology", json={"offices": offices}).status_code == 200
    assert console.get("/api/v1/topology", params={"format": "csv"}).text == CSV_TOPOLOGY


def test_topology_errors_name_line_and_field(console: Harness):
    answer = console.set_topology(
        "office,parent,type,subnets\nCentral Office,,Default,10.0.0.0/24\n"
        "Lyon,Nowhere,Default,10.2.0.0/33\n"
    )
    assert answer.status_code == 422
    problems = answer.json()["problems"]
    assert {
        "where": "line 3",
        "field": "parent",
        "message": "unknown parent office 'Nowhere'",
    } in problems
    assert any(p["where"] == "line 3" and p["field"] == "subnets" for p in problems)
    unchanged = console.get("/api/v1/topology", params={"format": "csv"}).text
    assert unchanged == "office,parent,type,subnets\nCentral Office,,Default,\n"


def test_server_outside_central_office_is_refused_clearly(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    answer = console.client.post(
        "/api/v1/link/register",
        json={"server_id": "srv-1", "name": "paris", "address": "10.1.0.5"},
        headers=console.link_headers(),
    )
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "must sit in a subnet of the 'Central Office'" in detail
    assert "office 'Paris'" in detail and "10.0.0.0/24" in detail


# --- P2P settings ---------------------------------------------------------------------


def test_p2p_settings_validate_and_reach_servers(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    settings = {
        "ports": {
            "discovery": 5000,
            "control": 5001,
            "foreground_data": 5002,
            "background_data": 5003,
        },
        "alternative_ports": {
            "discovery": 6000,
            "control": 6001,
            "foreground_data": 6002,
            "background_data": 6003,
        },
        "bandwidth": [{"office": "Paris", "foreground_kbps": 2000, "background_kbps": 500}],
    }
    assert console.put("/api/v1/settings/p2p", json=settings).status_code == 200
    clash = {**settings, "alternative_ports": {**settings["alternative_ports"], "control": 5000}}
    answer = console.put("/api/v1/settings/p2p", json=clash)
    assert answer.status_code == 422 and "alternative_ports" in answer.json()["detail"]
    unknown = {**settings, "bandwidth": [{"office": "Mars", "foreground_kbps": 1}]}
    answer = console.put("/api/v1/settings/p2p", json=unknown)
    assert answer.status_code == 422 and "bandwidth[0].office" in answer.json()["detail"]
    console.save_licence(seats=1, expires=date(2027, 1, 1))
    register_server(console)
    served = console.client.get("/api/v1/link/settings", headers=console.link_headers()).json()
    assert served["bandwidth"][0]["foreground_kbps"] == 2000
    assert served["alternative_ports"]["discovery"] == 6000


# --- link refusals (in-process; the real-HTTPS exchange is in test_console_link) -------


def test_link_refuses_wrong_key_and_old_version(console: Harness):
    wrong = console.client.post(
        "/api/v1/link/register",
        json={"server_id": "srv-1", "name": "x", "address": "10.0.0.5"},
        headers={**console.link_headers(), "X-Shoal-Server-Key": "wrong"},
    )
    assert wrong.status_code == 401 and "key mismatch" in wrong.json()["detail"]
    old = console.client.post(
        "/api/v1/link/register",
        json={"server_id": "srv-1", "name": "x", "address": "10.0.0.5"},
        headers=console.link_headers(version="0.0.9"),
    )
    assert old.status_code == 409
    assert "upgrade the P2P server to 0.1.0 or later" in old.json()["detail"]


def test_download_report_sums_servers_per_content_and_office(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=1, expires=date(2027, 1, 1))
    register_server(console)
    entry = {
        "content_id": "cd" * 32,
        "office": "Paris",
        "bytes_from_peers": 900,
        "bytes_from_server": 100,
    }
    for _ in range(2):  # running totals: sending them again changes nothing
        answer = console.client.post(
            "/api/v1/link/stats", json={"entries": [entry]}, headers=console.link_headers()
        )
        assert answer.status_code == 200 and answer.json() == {"applied": 1, "refused": []}
    assert console.get("/api/v1/reports/downloads").json()["items"] == [
        {**entry, "peer_share": 0.9, "application": None, "version": None}
    ]


# --- web UI ---------------------------------------------------------------------------


def test_web_ui_is_served_and_calls_only_routes_that_exist(console: Harness):
    page = console.client.get("/")
    assert page.status_code == 200 and "shoal console" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = console.client.get("/ui/console.js").text
    # Paths built in template literals (`/api/v1/devices/${id}`) compare as templates.
    found = re.findall(r"/api/v1/(?:[a-z0-9/_-]|\$\{[^}]*\})*", script)
    used = {re.sub(r"\$\{[^}]*\}", "{}", path.split("?")[0]) for path in found}
    published = {
        re.sub(r"\{[^}]*\}", "{}", path)
        for path in console.client.get("/api/v1/openapi.json").json()["paths"]
    }
    assert "/api/v1/devices/{}" in used and "/api/v1/summary" in used
    assert used <= published, used - published


def test_the_api_documentation_and_the_chart_library_come_from_the_console(console: Harness):
    """An air-gapped site sees the docs and the dashboard's chart: no CDN anywhere."""
    docs = console.client.get("/api/v1/docs")
    assert docs.status_code == 200
    sources = set(re.findall(r'(?:src|href)="([^"]+)"', docs.text))
    sources |= set(re.findall(r"url: '([^']+)'", docs.text))
    assert sources >= {"/ui/vendor/swagger-ui-bundle.js", "/ui/vendor/swagger-ui.css"}
    assert all(source.startswith("/") for source in sources), sources
    page = console.client.get("/").text
    assert all(s.startswith("/") for s in re.findall(r'(?:src|href)="([^"]+)"', page))
    for asset, kind in (
        ("/ui/vendor/swagger-ui-bundle.js", "javascript"),
        ("/ui/vendor/swagger-ui.css", "css"),
        ("/ui/vendor/chart.umd.min.js", "javascript"),
    ):
        answer = console.client.get(asset)
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
        assert len(answer.content) > 100_000
    assert console.client.get("/ui/vendor/..%2Fconsole.js").status_code == 404
