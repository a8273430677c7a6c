"""The console <-> P2P server link over real HTTPS, against a real console process."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import pytest

from shoal.core.changes import ChangeKind
from shoal.core.ids import ContentId
from shoal.licensing import issue_licence
from shoal.server.console_link import (
    ConsoleKeyMismatch,
    ConsoleLink,
    ConsoleLinkError,
    ConsoleRefused,
    ConsoleRefusedVersion,
    DownloadTotals,
    ReportedClient,
)
from shoal.store.content_store import ContentStore
from shoal.topology import parse_json

from .process import ConsoleProcess
from .vendor import VENDOR_KEY

TOPOLOGY = """office,parent,type,subnets
Central Office,,Default,127.0.0.0/8
Paris,Central Office,Default,10.1.0.0/24
"""


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ConsoleProcess, httpx.Client]]:
    console = ConsoleProcess(tmp_path_factory.mktemp("link") / "console")
    console.start()
    try:
        admin = console.admin()
        assert (
            admin.put(
                "/api/v1/topology", content=TOPOLOGY, headers={"content-type": "text/csv"}
            ).status_code
            == 200
        )
        yield console, admin
        admin.close()
    finally:
        console.stop()


def follow_feed(
    link: ConsoleLink, store: ContentStore, cursor: int
) -> tuple[int, list[str], list[str], set[ChangeKind]]:
    """Read the feed from ``cursor`` to its end as a P2P server does: fetch added
    content into ``store``; answer the new cursor, what was fetched, removed, and the
    other kinds seen."""
    fetched: list[str] = []
    removed: list[str] = []
    others: set[ChangeKind] = set()
    while True:
        page = link.changes(cursor)
        for change in page.changes:
            if change.kind is ChangeKind.CONTENT_ADDED and change.subject:
                link.download_into(store, change.subject)
                fetched.append(change.subject)
            elif change.kind is ChangeKind.CONTENT_REMOVED and change.subject:
                store.remove(ContentId.from_hex(change.subject))
                removed.append(change.subject)
            elif change.kind is not None:
                others.add(change.kind)
        cursor = page.last_seq
        if not page.more:
            return cursor, fetched, removed, others


def link_for(console: ConsoleProcess, key: str, **kwargs: object) -> ConsoleLink:
    options = {"name": "central", "address": "127.0.0.1", "ca_certificate": console.cert_path}
    options.update(kwargs)
    return ConsoleLink(console.base_url, key, "srv-central", **options)  # type: ignore[arg-type]


def upload(admin: httpx.Client, name: str, data: bytes) -> dict:
    answer = admin.post(
        "/api/v1/applications",
        params={"name": name, "version": "1.0", "chunk_size": 65536},
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_full_exchange(running: tuple[ConsoleProcess, httpx.Client], tmp_path: Path) -> None:
    console, admin = running
    server_key = admin.get("/api/v1/servers/auth-key").json()["key"]
    before = os.urandom(700_000)
    first = upload(admin, "Before activation", before)

    # A wrong key is a clear error on the server side and in the console's log.
    with link_for(console, "not-the-key") as wrong, pytest.raises(ConsoleKeyMismatch) as caught:
        wrong.register()
    assert "authentication key" in str(caught.value)
    assert "its authentication key does not match this console's" in console.log()

    # An old server is told what to upgrade.
    with (
        link_for(console, server_key, version="0.0.1") as old,
        pytest.raises(ConsoleRefusedVersion, match=r"upgrade the P2P server to 0\.1\.0 or later"),
    ):
        old.register()

    # A server outside the Central Office subnets is refused, saying why.
    with (
        link_for(console, server_key, address="10.1.0.9") as misplaced,
        pytest.raises(ConsoleRefused, match="must sit in a subnet of the 'Central Office'"),
    ):
        misplaced.register()

    link = link_for(console, server_key)
    registration = link.register()
    assert registration.activated is False
    with pytest.raises(ConsoleRefused, match="not activated"):
        link.changes(0)

    # Saving the licence activates the server; it then receives every application.
    key = issue_licence(VENDOR_KEY, "Acme", 1, date(2099, 1, 1), date(2026, 1, 1))
    assert admin.put("/api/v1/license", json={"key": key}).json()["active"] is True
    assert link.register().activated is True
    store = ContentStore(tmp_path / "server-content")
    cursor, fetched, removed, others = follow_feed(link, store, 0)
    assert fetched == [first["content_id"]] and removed == []
    assert ChangeKind.LICENCE_CHANGED in others
    assert store.data_path(ContentId.from_hex(first["content_id"])).read_bytes() == before

    # Later uploads follow; deletions too.
    after = os.urandom(300_000)
    second = upload(admin, "After activation", after)
    assert admin.delete(f"/api/v1/applications/{first['application_id']}").status_code == 204
    cursor, fetched, removed, others = follow_feed(link, store, cursor)
    assert fetched == [second["content_id"]]
    assert removed == [first["content_id"]]
    assert not store.data_path(ContentId.from_hex(first["content_id"])).exists()
    assert ChangeKind.ASSIGNMENTS_CHANGED in others
    second_path = store.data_path(ContentId.from_hex(second["content_id"]))
    assert hashlib.sha256(second_path.read_bytes()).hexdigest() == second["sha256"]

    # Settings, topology and signed assignments reach the server.
    assert link.settings()["ports"]["discovery"] == 41440
    assert parse_json(link.topology()).get("Paris") is not None
    created = admin.post(
        "/api/v1/assignments",
        json={"version_id": second["id"], "target_kind": "office", "target": "Paris"},
    ).json()
    document = link.assignments()
    assert document["assignments"][0]["id"] == created["id"]
    assert document["assignments"][0]["content_id"] == second["content_id"]
    assert document["assignments"][0]["offices"] == ["Paris"]

    # The server reports its clients and download statistics; the console shows them.
    answer = link.report_clients(
        [
            ReportedClient(
                "dev-1",
                "pc1",
                "10.1.0.10",
                "10.1.0.0/24",
                "0.1.0",
                ((second["content_id"], 300_000, True),),
            ),
            ReportedClient("dev-2", "pc2", "10.1.0.11", "10.1.0.0/24", "0.1.0"),
        ]
    )
    assert answer["licence"]["seats_over"] == 1
    assert "1 seat over" in admin.get("/api/v1/license").json()["message"]
    assert "licence overage" in console.log()
    progress = admin.get(f"/api/v1/assignments/{created['id']}").json()["progress"]
    assert (progress["devices_targeted"], progress["devices_complete"]) == (2, 1)
    link.report_stats([DownloadTotals(second["content_id"], "Paris", 500_000, 100_000)])
    (row,) = admin.get("/api/v1/reports/downloads").json()["items"]
    assert row["bytes_from_peers"] == 500_000 and row["peer_share"] == pytest.approx(
        0.8333, abs=1e-4
    )
    link.close()


def test_download_resumes_from_the_first_unverified_chunk(
    running: tuple[ConsoleProcess, httpx.Client], tmp_path: Path
) -> None:
    console, admin = running
    server_key = admin.get("/api/v1/servers/auth-key").json()["key"]
    key = issue_licence(VENDOR_KEY, "Acme", 5, date(2099, 1, 1), date(2026, 1, 1))
    admin.put("/api/v1/license", json={"key": key})
    data = os.urandom(5 * 65536 + 77)
    version = upload(admin, "Resumable", data)
    with link_for(console, server_key) as link:
        link.register()
        manifest, manifest_bytes = link.fetch_manifest(version["content_id"])
        # Range is honoured by the console.
        ranged = httpx.get(
            f"{console.base_url}/api/v1/link/content/{version['content_id']}",
            headers={**link._http.headers, "Range": "bytes=65536-65539"},
            verify=ssl.create_default_context(cafile=console.cert_path),
        )
        assert ranged.status_code == 206 and ranged.content == data[65536:65540]
        # Two chunks already held: the download asks only for the rest (a Range request
        # from the first chunk the store lacks) and completes the package.
        store = ContentStore(tmp_path / "resumed")
        store.add(manifest_bytes, pinned=True)
        for chunk_index in (0, 1):
            store.write_chunk(
                manifest.content_id,
                chunk_index,
                data[chunk_index * 65536 : (chunk_index + 1) * 65536],
            )
        info = link.download_into(store, version["content_id"])
        assert info.complete
        assert store.data_path(manifest.content_id).read_bytes() == data


def test_a_long_poll_of_the_feed_answers_as_soon_as_a_change_is_recorded(
    running: tuple[ConsoleProcess, httpx.Client],
) -> None:
    console, admin = running
    server_key = admin.get("/api/v1/servers/auth-key").json()["key"]
    key = issue_licence(VENDOR_KEY, "Acme", 5, date(2099, 1, 1), date(2026, 1, 1))
    admin.put("/api/v1/license", json={"key": key})
    version = upload(admin, "Polled", os.urandom(1000))
    with link_for(console, server_key, timeout=30) as link:
        assert link.register().activated
        cursor = link.changes(0).last_seq
        quiet = link.changes(cursor, wait=0.3)  # nothing happens: an empty answer
        assert quiet.changes == () and quiet.last_seq == cursor
        # A server set to poll longer than the console allows is capped, not refused.
        with link_for(console, server_key, timeout=1.0) as impatient:
            impatient.register()
            assert impatient.changes(cursor, wait=600).changes == ()
        with ThreadPoolExecutor(1) as pool:
            polled = pool.submit(link.changes, cursor, wait=20)
            time.sleep(0.5)
            assert not polled.done(), "the console answered an empty feed at once"
            admin.post(
                "/api/v1/assignments",
                json={"version_id": version["id"], "target_kind": "everyone"},
            ).raise_for_status()
            page = polled.result(timeout=10)  # long before the 20 s wait
    assert [change.kind for change in page.changes] == ["assignments_changed"]


def test_long_polls_do_not_keep_the_console_from_answering(
    running: tuple[ConsoleProcess, httpx.Client],
) -> None:
    """More long polls than the console has worker threads (40): it still answers."""
    console, admin = running
    server_key = admin.get("/api/v1/servers/auth-key").json()["key"]
    key = issue_licence(VENDOR_KEY, "Acme", 5, date(2099, 1, 1), date(2026, 1, 1))
    admin.put("/api/v1/license", json={"key": key})
    version = upload(admin, "Many polls", os.urandom(1000))
    with link_for(console, server_key, timeout=30) as link:
        assert link.register().activated
        cursor = link.changes(0).last_seq
        with ThreadPoolExecutor(60) as pool:
            polls = [pool.submit(link.changes, cursor, wait=20) for _ in range(60)]
            time.sleep(1.0)  # every poll has reached the console and is held
            assert not any(poll.done() for poll in polls)
            assert admin.get("/api/v1/status").status_code == 200
            assert not any(poll.done() for poll in polls), "answered only when polls ended"
            admin.post(
                "/api/v1/assignments",
                json={"version_id": version["id"], "target_kind": "everyone"},
            ).raise_for_status()
            pages = [poll.result(timeout=10) for poll in polls]
    assert all(page.changes for page in pages)


def test_server_refuses_an_incompatible_console() -> None:
    link = ConsoleLink("https://127.0.0.1:9", "k", "s", name="n", address="127.0.0.1")
    answer = httpx.Response(200, headers={"x-shoal-version": "9.0.0"}, json={})
    with pytest.raises(ConsoleRefusedVersion, match=r"upgrade the P2P server to 9\.x"):
        link._check(answer)
    with pytest.raises(ConsoleLinkError, match="register with the console first"):
        link.assignments()
    link.close()


def test_generated_admin_password_is_printed_once(tmp_path: Path) -> None:
    import re

    console = ConsoleProcess(tmp_path / "console", password=None)
    try:
        console.start()
        console.stop()
        printed = re.findall(r"created with password (\S+)", console.log())
        assert len(printed) == 1
        console.password = printed[0]
        console.start()
        console.admin().close()  # the printed password logs in
    finally:
        console.stop()
    assert len(re.findall(r"created with password", console.log())) == 1


def test_the_console_certifies_server_keys_and_serves_enrollment_bundles(
    running: tuple[ConsoleProcess, httpx.Client], tmp_path: Path
) -> None:
    from shoal.client.enrollment import enroll, load_enrollment, parse_bundle
    from shoal.core.identity import DeviceKey, device_id_of, enrollment_token_for
    from shoal.core.server_cert import verify_certificate

    console, admin = running
    server_key = admin.get("/api/v1/servers/auth-key").json()["key"]
    identity = DeviceKey.generate()
    with ConsoleLink(
        console.base_url,
        server_key,
        "srv-certified",
        name="certified",
        address="127.0.0.1",
        ca_certificate=console.cert_path,
        public_key=identity.public_raw,
    ) as link:
        registration = link.register()
        assert registration.certificate is not None
        certificate = verify_certificate(
            registration.certificate, [registration.console_key], time.time(), "127.0.0.1"
        )
        assert (certificate.public_key, certificate.server_id) == (
            identity.public_raw,
            "srv-certified",
        )
        # A server restarted with a new key gets a certificate for the new key.
        link.public_key = DeviceKey.generate().public_raw
        renewed = link.register().certificate
        assert renewed is not None
        assert verify_certificate(renewed, [registration.console_key], time.time()).public_key == (
            link.public_key
        )

        # The enrollment bundle: the console key to pin, the token, the server's address.
        answer = admin.get("/api/v1/servers/srv-certified/enrollment-bundle")
        assert answer.status_code == 200, answer.text
        bundle = parse_bundle(answer.json())
        assert bundle.console_key == registration.console_key.raw
        assert bundle.enrollment_token == enrollment_token_for(server_key)
        assert (bundle.server, bundle.server_port) == ("127.0.0.1", 41441)
        assert admin.get("/api/v1/servers/nobody/enrollment-bundle").status_code == 404
        enroll(tmp_path / "device", bundle)
        assert (tmp_path / "device" / "enrollment.json").stat().st_mode & 0o777 == 0o600
        assert load_enrollment(tmp_path / "device")[0] == bundle
        assert server_key not in repr(bundle) and bundle.enrollment_token.hex() not in repr(bundle)

        # One file, one command: the bundle also carries the ports and the console's TLS
        # fingerprint, and `shoal client enroll` leaves a settings file `run` needs alone.
        from shoal.console.security import certificate_fingerprint

        assert bundle.ports == (41440, 41442, 41443)
        assert bundle.console_cert_sha256 == certificate_fingerprint(console.cert_path)
        bundle_file = tmp_path / "bundle.json"
        bundle_file.write_text(answer.text)
        settings = tmp_path / "etc" / "client.toml"
        enrolled = subprocess.run(
            [
                *(sys.executable, "-m", "shoal", "client", "enroll", str(bundle_file)),
                *("--data-dir", str(tmp_path / "cli-device"), "--config", str(settings)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert enrolled.returncode == 0, enrolled.stderr
        assert bundle.console_cert_sha256 in enrolled.stdout
        written = tomllib.loads(settings.read_text())
        assert written == {"data_dir": str((tmp_path / "cli-device").resolve())}
        assert bundle.enrollment_token.hex() not in settings.read_text()
        kept, _trust = load_enrollment(Path(written["data_dir"]))
        assert kept == bundle

        # Device public keys are stored; a record whose ID is not its key's is refused
        # (that record only: the others of the report are kept).
        good, other = DeviceKey.generate(), DeviceKey.generate()
        answer = link.report_clients(
            [
                ReportedClient(
                    good.device_id.hex(),
                    "pc-good",
                    "10.1.0.20",
                    "10.1.0.0/24",
                    "0.1.0",
                    public_key=good.public_raw.hex(),
                ),
                ReportedClient(
                    good.device_id.hex()[:-2] + "00",
                    "pc-impostor",
                    "10.1.0.21",
                    "10.1.0.0/24",
                    "0.1.0",
                    public_key=other.public_raw.hex(),
                ),
            ]
        )
        assert [client["device_id"] for client in answer["clients"]] == [
            device_id_of(good.public_raw).hex()
        ]
        [refused] = answer["refused"]
        assert (refused["index"], refused["problems"][0]["field"]) == (1, "public_key")
        devices = {row["id"] for row in admin.get("/api/v1/devices").json()["items"]}
        assert good.device_id.hex() in devices
        assert good.device_id.hex()[:-2] + "00" not in devices
