"""``shoal console backup`` / ``restore``: a restored console is the same console to its
servers and clients (no re-enrolment), on SQLite and PostgreSQL (issue 12)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli import cli
from shoal.core.signing import verify_manifest_file

from .conftest import CSV_TOPOLOGY, FakeClock, Harness, make_harness

PACKAGE = os.urandom(200_000)


def _invoke(*arguments: str) -> str:
    result = CliRunner().invoke(cli, list(arguments), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_restored_console_is_accepted_by_its_servers_and_clients_without_enrolling(
    console: Harness,
    tmp_path: Path,
    database_url: str | None,
    clock: FakeClock,
    request: pytest.FixtureRequest,
) -> None:
    assert console.save_licence(10, date(2027, 1, 1)).status_code == 200
    assert console.set_topology(CSV_TOPOLOGY).status_code == 200
    registered = console.client.post(
        "/api/v1/link/register",
        json={"server_id": "srv-1", "name": "central", "address": "10.0.0.5"},
        headers=console.link_headers(),
    )
    assert registered.status_code == 200 and registered.json()["activated"]
    uploaded = console.upload("Editor", "1.0", PACKAGE, chunk_size=65536, confidential="false")
    assert uploaded.status_code == 201, uploaded.text
    version = uploaded.json()
    manifest_path = (
        f"/api/v1/applications/{version['application_id']}/versions/{version['id']}/manifest"
    )
    bundle_before = console.get("/api/v1/servers/srv-1/enrollment-bundle").json()
    pinned_key = console.state.signing_key.verify_key  # what enrolled clients hold
    certificate = (console.state.config.data_dir / "tls" / "cert.pem").read_bytes()
    link_headers = console.link_headers()

    backup_dir = tmp_path / "backup"
    database = ["--database-url", database_url] if database_url else []
    _invoke(
        "console",
        "backup",
        str(backup_dir),
        "--data-dir",
        str(console.state.config.data_dir),
        *database,
    )
    console.client.close()
    console.state.close()

    # A new machine: an empty data directory (and an empty PostgreSQL database).
    restored_url = request.getfixturevalue("postgres").new_database() if database_url else None
    restored_dir = tmp_path / "restored"
    target = ["--database-url", restored_url] if restored_url else []
    _invoke("console", "restore", str(backup_dir), "--data-dir", str(restored_dir), *target)
    restored = make_harness(restored_dir, restored_url, clock)
    try:
        # The P2P server: same authentication key, same certificate it pins, still activated.
        again = restored.client.post(
            "/api/v1/link/register",
            json={"server_id": "srv-1", "name": "central", "address": "10.0.0.5"},
            headers=link_headers,
        )
        assert again.status_code == 200, again.text
        assert again.json()["activated"]
        assert (restored_dir / "tls" / "cert.pem").read_bytes() == certificate
        # The clients: the console key they pinned signs the manifests; the bundle is the same.
        manifest = restored.get(manifest_path)
        assert manifest.status_code == 200
        verify_manifest_file(manifest.content, [pinned_key])
        assert restored.get("/api/v1/servers/srv-1/enrollment-bundle").json() == bundle_before
        content = restored.client.get(
            f"/api/v1/link/content/{version['content_id']}", headers=link_headers
        )
        assert content.status_code == 200 and content.content == PACKAGE
    finally:
        restored.client.close()
        restored.state.close()


def test_restore_refuses_a_data_directory_in_use_and_a_damaged_backup(
    console: Harness, tmp_path: Path, database_url: str | None
) -> None:
    if database_url:
        pytest.skip("the checks are the same on both databases")
    backup_dir = tmp_path / "backup"
    _invoke("console", "backup", str(backup_dir), "--data-dir", str(console.state.config.data_dir))
    result = CliRunner().invoke(
        cli,
        ["console", "restore", str(backup_dir), "--data-dir", str(console.state.config.data_dir)],
    )
    assert result.exit_code != 0 and "not empty" in str(result.exception)
    key = backup_dir / "files" / "console-signing.key"
    key.write_bytes(b"tampered")
    result = CliRunner().invoke(
        cli, ["console", "restore", str(backup_dir), "--data-dir", str(tmp_path / "new")]
    )
    assert result.exit_code != 0 and "damaged" in str(result.exception)
    assert not (tmp_path / "new").exists()
