"""Banned peers and rendezvous holders, end to end: a real ``ServerCore`` bans a peer and
grants a stripe through real control datagrams, the server's swarm report goes over the
real HTTPS link to a real console process, and the administrator's API shows the ban
(device by name, office, cause, since when) among the dashboard's problems and the
holder in the office view."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest

from shoal.core.packing import pack_bytes
from shoal.licensing import issue_licence
from shoal.server.console_link import ConsoleLink, DownloadTotals, ReportedBan, ReportedClient
from shoal.server.swarm_report import swarm_report
from shoal.wire.control import LeaseDecision, LeaseReply
from test_security_control import CONSOLE, Device, make_server

from .process import ConsoleProcess
from .vendor import VENDOR_KEY

TOPOLOGY = """office,parent,type,subnets
Central Office,,Default,127.0.0.0/8
Branch,Central Office,Default,10.1.0.0/24
"""
PACKAGE = os.urandom(200_000)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleLink, httpx.Client]]:
    """A console with the server's office tree, a licence, the package uploaded, and an
    activated server link."""
    console = ConsoleProcess(tmp_path_factory.mktemp("swarm") / "console")
    console.start()
    try:
        admin = console.admin()
        admin.put(
            "/api/v1/topology", content=TOPOLOGY, headers={"content-type": "text/csv"}
        ).raise_for_status()
        key = issue_licence(VENDOR_KEY, "Acme", 10, date(2099, 1, 1), date(2026, 1, 1))
        admin.put("/api/v1/license", json={"key": key}).raise_for_status()
        admin.post(
            "/api/v1/applications",
            params={"name": "Office Suite", "version": "24.2", "chunk_size": 65536},
            content=PACKAGE,
            headers={"content-type": "application/octet-stream"},
        ).raise_for_status()
        server_key = admin.get("/api/v1/servers/auth-key").json()["key"]
        with ConsoleLink(
            console.base_url,
            server_key,
            "srv-central",
            name="central",
            address="127.0.0.1",
            ca_certificate=console.cert_path,
        ) as link:
            assert link.register().activated
            yield link, admin
        admin.close()
    finally:
        console.stop()


def test_a_ban_and_a_holder_reach_the_dashboard_and_the_office_view(
    running: tuple[ConsoleLink, httpx.Client],
) -> None:
    link, admin = running
    server = make_server()
    core = server.core
    manifest = pack_bytes(PACKAGE, 65536)
    core.add_manifest(CONSOLE.sign(manifest).encode())
    content_id = manifest.content_id
    liar, first, second, holder = (
        Device(server, ip) for ip in ("10.1.0.9", "10.1.0.5", "10.1.0.6", "10.1.0.7")
    )
    for device in (liar, first, second, holder):
        device.register()
    link.report_clients(
        ReportedClient(device.device_id.hex(), f"pc-{device.ip}", device.ip, "10.1.0.0/24", "0.1.0")
        for device in (liar, first, second, holder)
    )
    # Two devices report bad chunks from the liar: it is banned in Branch at t=20.
    for reporter in (first, second):
        reporter.ask("bad_peer", content_id, ("10.1.0.9", 41442), 3, now=20.0)
    granted = holder.ask("lease", content_id, now=21.0)
    assert isinstance(granted, LeaseReply) and granted.decision is LeaseDecision.GRANTED

    wall_now = time.time()
    bans, holders = swarm_report(core, 25.0, wall_now)
    assert [(ban.office, ban.peer_ip, ban.device_id, ban.reporters) for ban in bans] == [
        ("Branch", "10.1.0.9", liar.device_id.hex(), 2)
    ]
    assert bans[0].since == pytest.approx(wall_now - 5.0)
    assert [(group.office, group.holders) for group in holders] == [
        ("Branch", (holder.device_id.hex(),))
    ]
    assert link.report_swarm(bans, holders) is True
    link.report_stats([DownloadTotals(content_id.hex, "Branch", 600_000, 200_000)])

    # The dashboard's problems name the device, the office, the cause and since when.
    problems = [
        item
        for item in admin.get("/api/v1/summary").json()["attention"]
        if item["kind"] == "banned_peer"
    ]
    since = datetime.fromtimestamp(wall_now - 5.0, UTC).strftime("%Y-%m-%d %H:%M")
    assert [item["message"] for item in problems] == [
        f"pc-10.1.0.9 (10.1.0.9) is banned in Branch since {since} UTC: 2 devices reported "
        "bad chunks of Office Suite 24.2 from it"
    ]
    (banned,) = admin.get("/api/v1/banned-peers").json()["items"]
    assert (banned["hostname"], banned["office"], banned["application"], banned["server"]) == (
        "pc-10.1.0.9",
        "Branch",
        "Office Suite",
        "central",
    )
    assert datetime.fromisoformat(banned["since"]).timestamp() == pytest.approx(wall_now - 5.0)

    # The office view: bytes over the WAN against the package size, and who brings it in.
    detail = admin.get("/api/v1/offices/Branch").json()
    assert detail["office"]["devices"] == 4
    assert detail["office"]["package_bytes"] == manifest.size
    (download,) = detail["downloads"]
    assert (download["application"], download["bytes_from_server"]) == ("Office Suite", 200_000)
    assert download["wan_copies"] == 1.0
    assert [h["hostname"] for h in download["holders"]] == ["pc-10.1.0.7"]
    assert [ban["hostname"] for ban in detail["banned"]] == ["pc-10.1.0.9"]

    # The next report replaces this one: the ban lifted and the download over, both go.
    assert link.report_swarm([], []) is True
    assert admin.get("/api/v1/banned-peers").json()["total"] == 0
    assert admin.get("/api/v1/offices/Branch").json()["downloads"][0]["holders"] == []
    kinds = {item["kind"] for item in admin.get("/api/v1/summary").json()["attention"]}
    assert "banned_peer" not in kinds


def test_a_bad_ban_record_is_refused_by_field_and_the_others_recorded(
    running: tuple[ConsoleLink, httpx.Client],
) -> None:
    link, admin = running
    now = time.time()
    good = ReportedBan("Branch", "10.1.0.20", "", "ab" * 32, 3, now - 60, now + 3600)
    bad = ReportedBan("Branch", "not an address", "", "ab" * 32, 3, now - 60, now + 3600)
    assert link.report_swarm([bad, good], []) is True
    (banned,) = admin.get("/api/v1/banned-peers").json()["items"]
    assert (banned["peer_ip"], banned["hostname"], banned["application"]) == (
        "10.1.0.20",
        None,
        None,
    )
    link.report_swarm([], [])
