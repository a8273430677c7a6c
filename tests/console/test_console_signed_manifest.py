"""The assignment document names each content's signed manifest file (SHA-256 and
length), so a client fetches it in one round trip; the field is optional both ways."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from datetime import date
from typing import Any

import pytest

from shoal.assignments import (
    AssignmentDocument,
    AssignmentsInvalid,
    ManifestRef,
    assignments_for,
    read_envelope,
    verify_document,
)
from shoal.core.ids import ContentId
from shoal.core.manifest import decode_manifest_file
from shoal.core.signing import SigningKey

from .conftest import CSV_TOPOLOGY, Harness
from .test_console_api import register_server

PACKAGE = random.Random(9).randbytes(70000)


def assigned_version(console: Harness) -> dict[str, Any]:
    console.set_topology(CSV_TOPOLOGY)
    console.save_licence(seats=10, expires=date(2027, 1, 1))
    register_server(console)
    version = console.upload("Sample", "1.0", PACKAGE)
    assert version.status_code == 201, version.text
    assignment = console.post(
        "/api/v1/assignments", json={"version_id": version.json()["id"], "target_kind": "everyone"}
    )
    assert assignment.status_code == 201, assignment.text
    return dict(version.json())


def document(console: Harness) -> AssignmentDocument:
    signed = console.client.get("/api/v1/link/assignments", headers=console.link_headers())
    assert signed.status_code == 200, signed.text
    envelope = read_envelope(json.dumps(signed.json()).encode())
    return verify_document(envelope, console.state.signing_key.verify_key)


def served_manifest(console: Harness, content_id: str) -> bytes:
    """The manifest file a P2P server gets from the console (and relays to clients)."""
    answer = console.client.get(
        f"/api/v1/link/content/{content_id}/manifest", headers=console.link_headers()
    )
    assert answer.status_code == 200, answer.text
    return answer.content


def test_the_document_names_the_manifest_file_servers_relay(console: Harness) -> None:
    version = assigned_version(console)
    manifest_file = served_manifest(console, version["content_id"])
    (assignment,) = assignments_for(document(console), "d1", None)
    assert assignment.content_id == ContentId.from_hex(version["content_id"])
    assert assignment.manifest == ManifestRef(
        hashlib.sha256(manifest_file).digest(), len(manifest_file)
    )


def test_a_manifest_signed_again_is_named_by_a_new_document(console: Harness) -> None:
    version = assigned_version(console)
    before = document(console)
    content_id = version["content_id"]
    old_file = served_manifest(console, content_id)
    resigned = SigningKey.generate().sign(decode_manifest_file(old_file).manifest).encode()
    console.state.content.replace_manifest(content_id, resigned)  # as a key rotation does
    console.clock.advance(seconds=1)
    after = document(console)
    assert after.sequence > before.sequence
    (assignment,) = assignments_for(after, "d1", None)
    assert assignment.manifest == ManifestRef(hashlib.sha256(resigned).digest(), len(resigned))


# --------------------------------------------- reading the field (clients of every age)

ENTRY = {
    "id": 1,
    "content_id": "ab" * 32,
    "target_kind": "everyone",
    "target": None,
    "offices": None,
    "background": False,
}


def parsed(entry: dict[str, Any]) -> ManifestRef | None:
    doc = AssignmentDocument(1, None, (entry,), (), "")  # type: ignore[arg-type]
    (assignment,) = assignments_for(doc, "d1", None)
    return assignment.manifest


def test_an_entry_without_the_field_is_read_as_before() -> None:
    assert parsed(ENTRY) is None  # an older console: the client asks MANIFEST_INFO


def test_the_field_is_read_and_a_malformed_one_refuses_the_document() -> None:
    good = {**ENTRY, "manifest": {"sha256": "cd" * 32, "length": 1234}}
    assert parsed(good) == ManifestRef(bytes.fromhex("cd" * 32), 1234)
    for bad in (
        {"sha256": "cd" * 31, "length": 1234},
        {"sha256": "cd" * 32, "length": 0},
        {"sha256": "cd" * 32, "length": 2**32},
        {"sha256": "cd" * 32, "length": "1234"},
        {"sha256": "xyz", "length": 1234},
        {"length": 1234},
        "cd" * 32,
    ):
        entry = copy.deepcopy({**ENTRY, "manifest": bad})
        with pytest.raises(AssignmentsInvalid):
            parsed(entry)
