"""The client release: marked on the console, refused while a P2P server is older,
offered to every client inside the console-signed assignment document."""

from __future__ import annotations

import json
from datetime import date

from shoal.assignments import assigned_entries
from shoal.core.ids import ContentId

from .conftest import CSV_TOPOLOGY, Harness


def register(console: Harness, server_id: str, name: str, version: str) -> None:
    assert console.set_topology(CSV_TOPOLOGY).status_code == 200
    console.save_licence(seats=10, expires=date(2027, 1, 1))
    answer = console.client.post(
        "/api/v1/link/register",
        json={"server_id": server_id, "name": name, "address": "10.0.0.5"},
        headers=console.link_headers(server_id, version),
    )
    assert answer.status_code == 200, answer.text


def upload_release(console: Harness, version: str) -> dict:
    answer = console.upload("shoal", version, f"wheel {version}".encode())
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def signed_entries(console: Harness) -> dict:
    signed = console.client.get("/api/v1/link/assignments", headers=console.link_headers())
    return assigned_entries(json.dumps(signed.json()).encode())


def test_a_release_newer_than_a_server_is_refused_naming_the_server_to_upgrade(console: Harness):
    register(console, "srv-1", "paris", "0.2.0")
    register(console, "srv-2", "lyon", "0.1.0")
    release = upload_release(console, "0.2.0")
    refused = console.put("/api/v1/client-release", json={"version_id": release["id"]})
    assert refused.status_code == 409, refused.text
    message = refused.json()["detail"]
    assert "lyon (0.1.0)" in message and "0.2.0 or later" in message
    assert "paris" not in message
    assert console.get("/api/v1/client-release").json() is None
    assert ContentId.from_hex(release["content_id"]) not in signed_entries(console)


def test_a_marked_release_is_assigned_to_everyone_with_the_signed_install_action(
    console: Harness,
):
    register(console, "srv-1", "paris", "0.2.0")
    release = upload_release(console, "0.2.0")
    marked = console.put("/api/v1/client-release", json={"version_id": release["id"]})
    assert marked.status_code == 200, marked.text
    body = marked.json()
    assert body["version"] == "0.2.0" and body["assignment_id"] is not None
    (entry,) = signed_entries(console)[ContentId.from_hex(release["content_id"])]
    assert entry["install"]["command"] == "shoal client install-release {file} --version 0.2.0"
    assert entry["install"]["extension"] == ".whl"
    assert entry["install"]["detect"] == "shoal client install-release --installed 0.2.0"
    assert console.get("/api/v1/client-release").json()["version_id"] == release["id"]
    assert console.delete("/api/v1/client-release").status_code == 204
    assert ContentId.from_hex(release["content_id"]) not in signed_entries(console)
    assert console.get("/api/v1/client-release").json() is None


def test_only_a_version_of_the_shoal_application_can_be_the_release(console: Harness):
    register(console, "srv-1", "paris", "0.2.0")
    other = console.upload("SampleApp", "0.2.0", b"not a client").json()
    refused = console.put("/api/v1/client-release", json={"version_id": other["id"]})
    assert refused.status_code == 422
    assert "'shoal' application" in refused.json()["detail"]
    bad = upload_release(console, "two")
    refused = console.put("/api/v1/client-release", json={"version_id": bad["id"]})
    assert refused.status_code == 422 and "not a version" in refused.json()["detail"]
