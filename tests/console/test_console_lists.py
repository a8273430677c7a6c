"""Lists page by page with totals; the dashboard summary and its change tokens; the
WAN-saved history; names next to IDs (issue 14, points 1, 2 and 5)."""

from __future__ import annotations

from datetime import date

from shoal import __version__

from .conftest import CSV_TOPOLOGY, Harness
from .test_console_api import register_server

CONTENT = "ab" * 32


def report(console: Harness, devices: list[tuple[str, str, str, str]], server: str = "srv-1"):
    """(device ID, host name, address, version) each; every device holds half of CONTENT."""
    answer = console.client.post(
        "/api/v1/link/clients",
        json={
            "clients": [
                {
                    "device_id": device_id,
                    "hostname": hostname,
                    "address": address,
                    "subnet": address.rsplit(".", 1)[0] + ".0/24",
                    "version": version,
                    "content": [{"content_id": CONTENT, "bytes_done": 50, "complete": False}],
                }
                for device_id, hostname, address, version in devices
            ]
        },
        headers=console.link_headers(server),
    )
    assert answer.status_code == 200, answer.text


def stats(console: Harness, office: str, from_peers: int, from_server: int) -> None:
    entry = {
        "content_id": CONTENT,
        "office": office,
        "bytes_from_peers": from_peers,
        "bytes_from_server": from_server,
    }
    answer = console.client.post(
        "/api/v1/link/stats", json={"entries": [entry]}, headers=console.link_headers()
    )
    assert answer.status_code == 200, answer.text


def test_devices_come_page_by_page_with_the_total_and_filters(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=100, expires=date(2027, 1, 1))
    register_server(console)
    report(console, [(f"id-{n:02}", f"pc-{n:02}", f"10.1.0.{n + 10}", "0.0.9") for n in range(25)])
    report(console, [("id-wifi", "laptop", "10.1.1.9", __version__)])

    page = console.get("/api/v1/devices", params={"limit": 10, "offset": 20}).json()
    assert page["total"] == 26 and (page["limit"], page["offset"]) == (10, 20)
    # By host name: "laptop" first, so the third page of ten starts at pc-19.
    assert [device["hostname"] for device in page["items"]] == [f"pc-{n}" for n in range(19, 25)]
    office = console.get("/api/v1/devices", params={"office": "Paris WiFi"}).json()
    assert [d["id"] for d in office["items"]] == ["id-wifi"] and office["total"] == 1
    found = console.get("/api/v1/devices", params={"search": "PC-1"}).json()
    assert found["total"] == 10
    assert console.get("/api/v1/devices", params={"version": "0.0.9"}).json()["total"] == 25

    console.clock.advance(hours=1)  # past the online window
    report(console, [("id-wifi", "laptop", "10.1.1.9", __version__)])
    online = console.get("/api/v1/devices", params={"status": "online"}).json()
    assert [d["id"] for d in online["items"]] == ["id-wifi"]
    assert console.get("/api/v1/devices", params={"status": "offline"}).json()["total"] == 25
    assert console.get("/api/v1/devices", params={"limit": 1001}).status_code == 422


def test_offices_are_read_one_level_at_a_time(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    top = console.get("/api/v1/offices", params={"parent": ""}).json()
    assert [(o["office"], o["children"]) for o in top["items"]] == [("Central Office", 2)]
    children = console.get("/api/v1/offices", params={"parent": "Central Office"}).json()
    assert {o["office"] for o in children["items"]} == {"Paris", "Remote"}
    assert console.get("/api/v1/offices", params={"search": "wifi"}).json()["total"] == 1


def test_the_summary_counts_and_says_what_needs_a_person(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    first = console.get("/api/v1/summary").json()
    assert {item["kind"] for item in first["attention"]} >= {"licence", "no_server"}
    console.save_licence(seats=2, expires=date(2026, 6, 20))
    register_server(console)
    report(
        console,
        [
            ("d1", "pc-1", "10.1.0.10", __version__),
            ("d2", "pc-2", "10.1.0.11", __version__),
            ("d3", "pc-3", "10.1.0.12", "0.0.9"),
        ],
    )
    summary = console.get("/api/v1/summary").json()
    assert summary["devices"] == {"total": 3, "online": 3}
    assert summary["servers"] == {"total": 1, "online": 1}
    assert summary["offices"] == 4 and summary["licence"]["seats_over"] == 1
    kinds = {item["kind"]: item for item in summary["attention"]}
    assert kinds["overage"]["message"] == "1 seat over the 2 purchased (3 used)"
    assert kinds["licence_expiring"]["severity"] == "warning"
    assert "1 device run a client version other than" in kinds["version_mismatch"]["message"]
    assert "server_offline" not in kinds

    # The tokens change only with what they stand for.
    tokens = summary["changed"]
    assert console.get("/api/v1/summary").json()["changed"] == tokens
    assert console.upload("Editor", "1.0", b"x" * 1000).status_code == 201
    after_upload = console.get("/api/v1/summary").json()["changed"]
    assert after_upload["feed"] != tokens["feed"] and after_upload["devices"] == tokens["devices"]
    console.clock.advance(minutes=1)
    report(console, [("d1", "pc-1", "10.1.0.10", __version__)])
    assert console.get("/api/v1/summary").json()["changed"]["devices"] != tokens["devices"]

    console.clock.advance(hours=1)
    late = {item["kind"] for item in console.get("/api/v1/summary").json()["attention"]}
    assert "server_offline" in late


def test_wan_saved_is_a_headline_and_a_history(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=10, expires=date(2027, 1, 1))
    register_server(console)
    stats(console, "Paris", 0, 1000)  # 12:00: the rendezvous point pulls over the WAN
    console.clock.advance(hours=2)
    stats(console, "Paris", 9000, 1000)  # 14:00: its office swarms from it
    summary = console.get("/api/v1/summary").json()
    assert summary["wan"] == {
        "bytes_from_peers": 9000,
        "bytes_from_server": 1000,
        "saved_share": 0.9,
    }
    day = console.get("/api/v1/reports/wan", params={"period": "day"}).json()
    assert day["step_seconds"] == 3600 and len(day["points"]) == 24
    moved = [
        (p["start"][11:16], p["bytes_from_peers"], p["bytes_from_server"]) for p in day["points"]
    ]
    assert [point for point in moved if point[1] or point[2]] == [
        ("12:00", 0, 1000),
        ("14:00", 9000, 0),
    ]
    hour = console.get("/api/v1/reports/wan", params={"period": "hour"}).json()
    assert sum(p["bytes_from_peers"] for p in hour["points"]) == 9000
    assert sum(p["bytes_from_server"] for p in hour["points"]) == 0
    assert console.get("/api/v1/reports/wan", params={"period": "year"}).status_code == 422


def test_assignments_show_names_and_progress_per_office(console: Harness):
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=10, expires=date(2027, 1, 1))
    register_server(console)
    version = console.upload("Editor", "2.0", b"e" * 100).json()
    choices = console.get("/api/v1/versions", params={"search": "edit"}).json()
    assert [(v["application"], v["version"]) for v in choices["items"]] == [("Editor", "2.0")]
    devices = [
        {
            "device_id": device_id,
            "hostname": hostname,
            "address": address,
            "subnet": address.rsplit(".", 1)[0] + ".0/24",
            "version": __version__,
            "content": [
                {"content_id": version["content_id"], "bytes_done": done, "complete": done == 100}
            ],
        }
        for device_id, hostname, address, done in (
            ("d1", "pc-1", "10.1.0.10", 100),
            ("d2", "pc-2", "10.1.0.11", 50),
            ("d3", "pad", "10.1.1.10", 0),
        )
    ]
    console.client.post(
        "/api/v1/link/clients", json={"clients": devices}, headers=console.link_headers()
    )
    to_device = console.post(
        "/api/v1/assignments",
        json={"version_id": version["id"], "target_kind": "device", "target": "d3"},
    ).json()
    assert to_device["target_label"] == "pad"
    to_paris = console.post(
        "/api/v1/assignments",
        json={"version_id": version["id"], "target_kind": "office", "target": "Paris"},
    ).json()
    assert to_paris["progress"]["devices_targeted"] == 3
    assert to_paris["progress"]["percent"] == 50.0
    detail = console.get(f"/api/v1/assignments/{to_paris['id']}").json()
    assert [(o["office"], o["devices_complete"], o["percent"]) for o in detail["offices"]] == [
        ("Paris", 1, 75.0),
        ("Paris WiFi", 0, 0.0),
    ]
    listed = console.get("/api/v1/assignments", params={"limit": 1}).json()
    assert listed["total"] == 2 and listed["items"][0]["id"] == to_paris["id"]  # newest first


def test_administrators_and_servers_can_be_removed(console: Harness):
    added = console.post(
        "/api/v1/admins", json={"username": "second", "password": "another long password"}
    ).json()
    admins = console.get("/api/v1/admins").json()
    assert admins["total"] == 2
    me = next(a for a in admins["items"] if a["username"] == "admin")
    refused = console.delete(f"/api/v1/admins/{me['id']}")
    assert refused.status_code == 409 and "yourself" in refused.json()["detail"]
    assert console.delete(f"/api/v1/admins/{added['id']}").status_code == 204
    assert console.get("/api/v1/admins").json()["total"] == 1

    console.set_topology(CSV_TOPOLOGY)
    register_server(console)
    assert console.get("/api/v1/servers").json()["items"][0]["online"] is True
    assert console.delete("/api/v1/servers/srv-1").status_code == 204
    assert console.get("/api/v1/servers").json()["total"] == 0
    assert console.delete("/api/v1/servers/srv-1").status_code == 404
