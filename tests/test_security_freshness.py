"""Row 2 of issue 13: a replayed, stale or re-keyed assignment document changes nothing.

The clients' side runs on the simulated enterprise (real agents and server, virtual
clock); the console's side (sequence in SQL, expiry, re-signing, key rotation) on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from console.conftest import ADMIN_PASSWORD, CSV_TOPOLOGY, FakeClock, Harness, make_harness
from console.vendor import vendor_public_key_file
from shoal.assignments import (
    DOCUMENT_FORMAT,
    encode_envelope,
    manifest_ref,
    read_envelope,
    sign_assignments,
)
from shoal.client.agent import AgentCore
from shoal.client.service import ClientService
from shoal.client.trust import DocumentExpired, DocumentRefused, DocumentStale, TrustState
from shoal.console import documents
from shoal.console.keys import KeyChainBroken
from shoal.console.state import (
    ADMIN_PASSWORD_VARIABLE,
    ConsoleConfig,
    ConsoleState,
    open_console,
)
from shoal.core.errors import UnknownSigner
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey, VerifyKey, verify_manifest_file
from shoal.key_rotation import sign_rotation
from shoal_dev.sim.enterprise import (
    DOCUMENT_VALIDITY,
    SIM_EPOCH,
    Enterprise,
    SimOffice,
    build_enterprise,
    sim_document,
)

MIB = 1024 * 1024


def entry(number: int, content_hex: str, manifest_file: bytes = b"") -> dict[str, object]:
    """An assignment to everyone; naming the signed manifest's blob if given (as the
    console and ``build_enterprise`` do)."""
    fields: dict[str, object] = {
        "id": number,
        "content_id": content_hex,
        "target_kind": "everyone",
        "target": None,
        "offices": None,
        "background": False,
    }
    if manifest_file:
        fields["manifest"] = manifest_ref(manifest_file).entry()
    return fields


def second_package(enterprise: Enterprise) -> str:
    """A second package on the server (not yet assigned); its content ID (hex)."""
    data = random.Random(7).randbytes(MIB)
    manifest = pack_bytes(data, 65536)
    manifest_file = enterprise.console_key.sign(manifest).encode()
    server = enterprise.server
    server.core.add_manifest(manifest_file)
    server.origin.add(manifest_file, pinned=True)
    for chunk_index in range(manifest.chunk_count):
        start = chunk_index * 65536
        server.origin.write_chunk(manifest.content_id, chunk_index, data[start : start + 65536])
    return manifest.content_id.hex


def relay(enterprise: Enterprise, blob: bytes, seconds: float = 20) -> None:
    """The server relays ``blob`` as its assignment document; let the clients react."""
    enterprise.server.core.set_assignments(blob)
    enterprise.network.pump(enterprise.network.hosts["10.0.0.2"])
    enterprise.run(until=enterprise.network.now + seconds)


def assigned(agent: AgentCore) -> set[str]:
    return {content_id.hex for content_id in agent.downloads}


@dataclasses.dataclass
class Withdrawn:
    """Document 1 assigned the first package (done); document 2 withdrew it for a second."""

    enterprise: Enterprise
    first_document: bytes
    second_document: bytes
    second: str


def withdrawn_first_assignment(tmp_path: Path) -> Withdrawn:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 2)], package_size=MIB, checkin_seconds=5
    )
    # The very bytes build_enterprise relayed (Ed25519 signatures are deterministic).
    first_document = sim_document(
        enterprise.console_key,
        [entry(1, enterprise.manifest.content_id.hex, enterprise.manifest_file)],
        1,
        0.0,
    )
    enterprise.run(until=30, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    second = second_package(enterprise)
    second_document = enterprise.signed_assignments([entry(2, second)])
    relay(enterprise, second_document, seconds=30)
    for client in enterprise.clients:
        assert assigned(client.agent) == {second}
        assert client.agent.trust is not None and client.agent.trust.highest_sequence == 2
    return Withdrawn(enterprise, first_document, second_document, second)


# --- clients: replay, restart, expiry, rotation --------------------------------------


def test_attack_2_replayed_older_document_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    setup = withdrawn_first_assignment(tmp_path)
    enterprise, first_document, second = setup.enterprise, setup.first_document, setup.second
    first = enterprise.manifest.content_id
    before = {
        client.host.ip: (assigned(client.agent), client.store.info(first).pinned)
        for client in enterprise.clients
    }
    relay(enterprise, first_document)  # the genuine, older, signed document
    for client in enterprise.clients:
        agent = client.agent
        assert assigned(agent) == {second}, "the withdrawn assignment came back"
        assert (assigned(agent), client.store.info(first).pinned) == before[client.host.ip]
        assert not client.store.info(first).pinned
        assert agent.counters.documents_refused >= 1
        assert agent.trust is not None and agent.trust.highest_sequence == 2
        status = agent.status(enterprise.network.now)["trust"]
        assert status["document_note"] == "assignment document 1 is older than 2: refused (replay?)"


def test_attack_2_replay_is_refused_after_a_restart(tmp_path: Path) -> None:
    """The shell saves the TrustState; a restarted client still refuses the old one."""
    setup = withdrawn_first_assignment(tmp_path)
    enterprise, first_document, second = setup.enterprise, setup.first_document, setup.second
    client = enterprise.clients[0]
    assert client.agent.trust is not None
    trust_file = tmp_path / "trust.json"
    client.agent.trust.save(trust_file)  # what ClientService does when it changes
    network = enterprise.network
    network.kill(client.host)
    enrolled = dataclasses.replace(client.agent.config, trust=TrustState.load(trust_file))
    agent = AgentCore(enrolled, client.store, network.now)
    network.restart(client.host, agent.bindings(), agent)
    client.agent = agent
    relay(enterprise, first_document)
    assert agent.registration is not None
    assert assigned(agent) == set(), "the restarted client applied the replayed document"
    assert agent.trust == TrustState.load(trust_file)
    assert agent.document_note == "assignment document 1 is older than 2: refused (replay?)"
    # The genuine current document is accepted again (same sequence, same text).
    relay(enterprise, setup.second_document)
    assert assigned(agent) == {second}


def test_attack_2_an_older_document_kept_on_disk_is_refused_as_a_fetched_one(
    tmp_path: Path,
) -> None:
    """A restarted client holds the copy of a document an earlier process kept
    (``shoal.client.kept_assignments``); here an older one, as if the file had been
    replaced by the genuine document 1, and the server names that document again: the
    kept copy is checked as a fetched one is, and refused."""
    setup = withdrawn_first_assignment(tmp_path)
    enterprise, first_document, second = setup.enterprise, setup.first_document, setup.second
    client = enterprise.clients[0]
    assert client.agent.trust is not None
    trust_file = tmp_path / "trust.json"
    client.agent.trust.save(trust_file)
    network = enterprise.network
    network.kill(client.host)
    enrolled = dataclasses.replace(client.agent.config, trust=TrustState.load(trust_file))
    agent = AgentCore(enrolled, client.store, network.now)
    agent.assignments.kept = first_document
    network.restart(client.host, agent.bindings(), agent)
    client.agent = agent
    relay(enterprise, first_document)
    assert agent.registration is not None
    assert assigned(agent) == set(), "the restarted client applied the kept older document"
    assert agent.counters.documents_kept == 0
    assert agent.document_note == "assignment document 1 is older than 2: refused (replay?)"
    relay(enterprise, setup.second_document)
    assert assigned(agent) == {second}


def test_attack_2_expired_document_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    setup = withdrawn_first_assignment(tmp_path)
    enterprise, second = setup.enterprise, setup.second
    # A genuine document with a newer sequence, but signed more than a week ago.
    stale = sim_document(
        enterprise.console_key,
        [entry(1, enterprise.manifest.content_id.hex)],
        3,
        enterprise.network.now - DOCUMENT_VALIDITY.total_seconds() - 1,
    )
    relay(enterprise, stale)
    for client in enterprise.clients:
        assert assigned(client.agent) == {second}
        assert client.agent.trust is not None and client.agent.trust.highest_sequence == 2
        assert client.agent.document_note.startswith("assignment document 3 expired at 2026-")


def test_attack_2_same_sequence_with_another_text_is_refused(tmp_path: Path) -> None:
    setup = withdrawn_first_assignment(tmp_path)
    enterprise, second = setup.enterprise, setup.second
    other = sim_document(
        enterprise.console_key,
        [entry(1, enterprise.manifest.content_id.hex)],
        2,
        enterprise.network.now,
    )
    relay(enterprise, other)
    for client in enterprise.clients:
        assert assigned(client.agent) == {second}
        assert "differs from the one accepted with the same sequence" in (
            client.agent.document_note
        )


def rotated_envelope(
    old: SigningKey, new: SigningKey, assignments: list[dict[str, object]], sequence: int, at: float
) -> bytes:
    """What the console relays after rotating from ``old`` to ``new``."""
    statement = sign_rotation(old, new.verify_key, 1, SIM_EPOCH)
    envelope = json.loads(sim_document(new, assignments, sequence, at))
    envelope["rotations"] = [statement]
    return encode_envelope(envelope)


def test_attack_2_rotation_reaches_clients_and_the_old_key_is_refused_after(
    tmp_path: Path,
) -> None:
    setup = withdrawn_first_assignment(tmp_path)
    enterprise, second = setup.enterprise, setup.second
    old, new = enterprise.console_key, SigningKey.generate()
    relay(
        enterprise,
        rotated_envelope(old, new, [entry(2, second)], 3, enterprise.network.now),
    )
    for client in enterprise.clients:
        trust = client.agent.trust
        assert trust is not None and trust.console_key.raw == new.verify_key.raw
        assert trust.console_keys == (old.verify_key.raw, new.verify_key.raw)
        assert "console key rotated to" in client.agent.document_note
    # A document signed by the retired key, even with a higher sequence, is refused.
    relay(
        enterprise,
        sim_document(
            old, [entry(1, enterprise.manifest.content_id.hex)], 9, enterprise.network.now
        ),
    )
    for client in enterprise.clients:
        assert assigned(client.agent) == {second}
        assert client.agent.trust is not None and client.agent.trust.highest_sequence == 3
        assert "not signed by the console's current key" in client.agent.document_note
    # Manifests signed by the old key before the rotation are still accepted (the
    # current key's document names their content ID); the old document stays refused.
    trust = enterprise.clients[0].agent.trust
    assert trust is not None
    manifest_file = old.sign(enterprise.manifest).encode()
    assert verify_manifest_file(manifest_file, trust.manifest_keys()) == enterprise.manifest


def test_attack_2_forged_rotation_statement_changes_nothing(tmp_path: Path) -> None:
    setup = withdrawn_first_assignment(tmp_path)
    enterprise, second = setup.enterprise, setup.second
    attacker, pinned = SigningKey.generate(), enterprise.console_key
    # Claims to hand over from the pinned key, but the attacker signed it.
    forged = sign_rotation(attacker, attacker.verify_key, 1, SIM_EPOCH)
    forged_fields = json.loads(forged["statement"])
    forged_fields["old_key"] = pinned.verify_key.raw.hex()
    forged_text = json.dumps(forged_fields, sort_keys=True, separators=(",", ":"))
    claims_pinned = {
        "statement": forged_text,
        "signature": attacker.private_key.sign(forged_text.encode()).hex(),
    }
    envelope = json.loads(
        sim_document(
            attacker,
            [entry(1, enterprise.manifest.content_id.hex)],
            50,
            enterprise.network.now,
        )
    )
    envelope["rotations"] = [claims_pinned, forged]
    relay(enterprise, encode_envelope(envelope))
    for client in enterprise.clients:
        agent = client.agent
        assert agent.trust is not None
        assert agent.trust.console_keys == (pinned.verify_key.raw,)
        assert agent.trust.highest_sequence == 2
        assert assigned(agent) == {second}
        assert agent.counters.rotations_ignored >= 2
        assert agent.status(enterprise.network.now)["trust"]["rotations_ignored"] >= 2


# --- TrustState, pure -----------------------------------------------------------------


def document_blob(key: SigningKey, sequence: int, expires: str) -> bytes:
    document = {
        "format": DOCUMENT_FORMAT,
        "sequence": sequence,
        "generated_at": "2026-06-01T12:00:00+00:00",
        "expires": expires,
        "assignments": [],
    }
    return encode_envelope(sign_assignments(key, document))


def test_trust_state_accepts_the_same_document_twice_and_refuses_what_is_older() -> None:
    key = SigningKey.generate()
    now = SIM_EPOCH
    trust = TrustState((key.verify_key.raw,), highest_sequence=15)
    newer = read_envelope(document_blob(key, 16, "2026-01-08T00:00:00+00:00"))
    accepted = trust.accept_assignments(newer, now)
    assert accepted.trust.highest_sequence == 16
    again = accepted.trust.accept_assignments(newer, now)
    assert again.trust == accepted.trust
    with pytest.raises(DocumentStale, match="assignment document 12 is older than 16"):
        accepted.trust.accept_assignments(
            read_envelope(document_blob(key, 12, "2026-01-08T00:00:00+00:00")), now
        )
    with pytest.raises(DocumentExpired, match="expired at 2025-12-31T23:00:00"):
        trust.accept_assignments(
            read_envelope(document_blob(key, 17, "2026-01-01T00:00:00+01:00")), now
        )
    with pytest.raises(DocumentRefused, match="not signed by the console's current key"):
        trust.accept_assignments(
            read_envelope(document_blob(SigningKey.generate(), 99, "2026-01-08T00:00:00Z")), now
        )
    # A chain of two rotations from the pinned key is followed in one step.
    middle, last = SigningKey.generate(), SigningKey.generate()
    envelope = json.loads(document_blob(last, 20, "2026-01-08T00:00:00+00:00"))
    envelope["rotations"] = [
        sign_rotation(key, middle.verify_key, 1, now),
        sign_rotation(middle, last.verify_key, 2, now),
    ]
    chained = trust.accept_assignments(read_envelope(encode_envelope(envelope)), now)
    assert chained.trust.console_keys == tuple(k.verify_key.raw for k in (key, middle, last))
    assert (chained.rotations_adopted, chained.rotations_ignored) == (2, 0)
    # Sent again with the next document: already followed, neither adopted nor ignored.
    envelope2 = json.loads(document_blob(last, 21, "2026-01-08T00:00:00+00:00"))
    envelope2["rotations"] = envelope["rotations"]
    later = chained.trust.accept_assignments(read_envelope(encode_envelope(envelope2)), now)
    assert (later.rotations_adopted, later.rotations_ignored) == (0, 0)
    saved = TrustState.from_json(later.trust.to_json())
    assert saved == later.trust


# --- the console: sequence in SQL, expiry, re-signing, rotation ------------------------


@pytest.fixture
def console(tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setenv(ADMIN_PASSWORD_VARIABLE, ADMIN_PASSWORD)
    harness = make_harness(
        tmp_path / "console", database_url, FakeClock(SIM_EPOCH + timedelta(days=150))
    )
    harness.database_url = database_url  # type: ignore[attr-defined]
    assert harness.set_topology(CSV_TOPOLOGY).status_code == 200
    assert harness.save_licence(seats=10, expires=date(2027, 1, 1)).status_code == 200
    registered = harness.client.post(
        "/api/v1/link/register",
        json={"server_id": "srv-1", "name": "central", "address": "10.0.0.5"},
        headers=harness.link_headers(),
    )
    assert registered.status_code == 200, registered.text
    return harness


def link_document(console: Harness) -> tuple[bytes, dict[str, object]]:
    answer = console.client.get("/api/v1/link/assignments", headers=console.link_headers())
    assert answer.status_code == 200, answer.text
    envelope = answer.json()
    return encode_envelope(envelope), json.loads(envelope["document"])


def feed_kinds(console: Harness, after: int) -> tuple[list[str], int]:
    answer = console.client.get(
        "/api/v1/link/changes", params={"after": after}, headers=console.link_headers()
    ).json()
    return [change["kind"] for change in answer["changes"]], answer["last_seq"]


def reopened(console: Harness, tmp_path: Path) -> Harness:
    console.client.close()
    console.state.close()
    fresh = make_harness(tmp_path / "console", console.database_url, console.clock)  # type: ignore[attr-defined]
    fresh.database_url = console.database_url  # type: ignore[attr-defined]
    return fresh


def assign_new_version(console: Harness, name: str) -> str:
    version = console.upload(name, "1.0", random.Random(name).randbytes(70000)).json()
    answer = console.post(
        "/api/v1/assignments", json={"version_id": version["id"], "target_kind": "everyone"}
    )
    assert answer.status_code == 201, answer.text
    return str(version["content_id"])


def test_attack_2_console_documents_are_fresh_and_their_sequence_only_grows(
    console: Harness, tmp_path: Path
) -> None:
    state: ConsoleState = console.state
    pinned = TrustState((state.signing_key.verify_key.raw,))
    assign_new_version(console, "Editor")
    first_blob, first = link_document(console)
    assert first["format"] == DOCUMENT_FORMAT
    signed_at = console.clock()
    assert first["expires"] == (signed_at + timedelta(days=7)).isoformat()
    assert link_document(console)[0] == first_blob  # nothing changed: the same document
    _, cursor = feed_kinds(console, 0)
    # Restart: the sequence is kept in SQL; a change signs a higher one.
    console = reopened(console, tmp_path)
    assert link_document(console)[0] == first_blob
    assign_new_version(console, "Viewer")
    second_blob, second = link_document(console)
    assert isinstance(first["sequence"], int) and isinstance(second["sequence"], int)
    assert second["sequence"] > first["sequence"]
    kinds, cursor = feed_kinds(console, cursor)
    assert "assignments_changed" in kinds
    # Nothing changes for four days: the start of a feed poll signs it again (half of
    # its validity is left), and the feed tells the servers.
    console.clock.advance(days=4)
    kinds, cursor = feed_kinds(console, cursor)
    assert kinds == ["assignments_changed"]
    third_blob, third = link_document(console)
    assert isinstance(third["sequence"], int) and third["sequence"] > second["sequence"]
    assert third["assignments"] == second["assignments"]
    assert third["expires"] == (console.clock() + timedelta(days=7)).isoformat()
    # A topology change moves office targets: the servers are told, and the document
    # is signed anew only because what it says changed.
    office_version = console.upload("Office", "1.0", b"office only").json()
    assert (
        console.post(
            "/api/v1/assignments",
            json={"version_id": office_version["id"], "target_kind": "office", "target": "Paris"},
        ).status_code
        == 201
    )
    third_blob, third = link_document(console)
    kinds, cursor = feed_kinds(console, cursor)
    wider = CSV_TOPOLOGY + "Lyon,Paris,Default,10.2.0.0/24\n"
    assert console.set_topology(wider).status_code == 200
    kinds, cursor = feed_kinds(console, cursor)
    assert "assignments_changed" in kinds
    moved_blob, moved = link_document(console)
    assert isinstance(moved["sequence"], int) and moved["sequence"] > third["sequence"]
    assert moved["assignments"][-1]["offices"] == ["Lyon", "Paris", "Paris WiFi"]
    assert link_document(console)[0] == moved_blob
    # A client that has the newest refuses the replayed older ones.
    now = console.clock()
    trust = pinned.accept_assignments(read_envelope(third_blob), now).trust
    for old_blob in (first_blob, second_blob):
        with pytest.raises(DocumentStale, match="refused \\(replay\\?\\)"):
            trust.accept_assignments(read_envelope(old_blob), now)
    # Ten days later the third one (never refreshed: no server polled) has expired.
    with pytest.raises(DocumentExpired):
        pinned.accept_assignments(read_envelope(third_blob), now + timedelta(days=10))
    console.client.close()
    console.state.close()


def test_attack_2_two_signers_never_share_a_sequence(console: Harness) -> None:
    """A signer that read the row before another signed loses, and reads the winner's."""
    state = console.state
    assign_new_version(console, "Editor")
    _, first = link_document(console)
    with state.sessions() as session:
        row = session.get(documents.db.SignedDocument, documents.ASSIGNMENTS)
        assert row is not None
        session.expunge(row)
    documents.signed_assignments(state, force=True)  # the other signer wins
    with state.sessions() as session:
        lost = documents._sign(state, session, row, [], "[]", state.clock())
        assert lost is None
        session.rollback()
    _, latest = link_document(console)
    assert isinstance(latest["sequence"], int) and isinstance(first["sequence"], int)
    assert latest["sequence"] == first["sequence"] + 1


def test_attack_2_console_key_rotation_reaches_clients_and_retires_the_old_key(
    console: Harness, tmp_path: Path
) -> None:
    state = console.state
    content_id = assign_new_version(console, "Editor")
    shown = console.get("/api/v1/console-key").json()
    old_key = bytes.fromhex(shown["key"])
    assert shown["rotations"] == 0
    pinned = TrustState((old_key,))
    before_blob, _ = link_document(console)
    old_manifest = state.content.manifest_path(content_id).read_bytes()
    rotated = console.post("/api/v1/console-key/rotate")
    assert rotated.status_code == 200, rotated.text
    answer = rotated.json()
    assert answer["previous_key"] == old_key.hex() and answer["rotations"] == 1
    new_key = bytes.fromhex(answer["key"])
    assert new_key != old_key
    after_blob, after = link_document(console)
    now = console.clock()
    accepted = pinned.accept_assignments(read_envelope(after_blob), now)
    assert accepted.trust.console_keys == (old_key, new_key)
    assert accepted.rotations_adopted == 1
    # From then on, what the old key signed is refused: the document from before the
    # rotation, and any later one (whatever its sequence).
    with pytest.raises(DocumentRefused):
        accepted.trust.accept_assignments(read_envelope(before_blob), now)
    # Manifests are signed again with the new key (same content ID), so a P2P server
    # verifies them with the key the console now announces.
    new_manifest = state.content.manifest_path(content_id).read_bytes()
    assert new_manifest != old_manifest
    assert verify_manifest_file(new_manifest, [VerifyKey.from_raw(new_key)]).content_id.hex == (
        content_id
    )
    # A device enrolled after the rotation (it pins the new key only) still accepts
    # the manifests P2P servers fetched before it: the document lists the old key.
    late = TrustState((new_key,)).accept_assignments(read_envelope(after_blob), now)
    relayed = verify_manifest_file(old_manifest, late.trust.manifest_keys(late.document))
    assert relayed.content_id.hex == content_id
    with pytest.raises(UnknownSigner):
        verify_manifest_file(old_manifest, late.trust.manifest_keys())
    # A restart keeps the new key and the chain.
    console = reopened(console, tmp_path)
    assert console.state.signing_key.verify_key.raw == new_key
    assert link_document(console)[0] == after_blob
    assert after["sequence"] == accepted.trust.highest_sequence
    console.client.close()
    console.state.close()


def test_an_interrupted_rotation_is_finished_or_undone_at_start(
    console: Harness, tmp_path: Path
) -> None:
    """A stop between committing the new key and swapping the files finishes the
    swap at start; a stop before the commit leaves the old key (and no stray file)."""
    data_dir = tmp_path / "console"
    old_key = console.state.signing_key.verify_key.raw
    answer = console.post("/api/v1/console-key/rotate").json()
    new_key = bytes.fromhex(answer["key"])
    # Undo step 3 by hand: the new key back to .new, the old one back in place.
    retired = data_dir / f"console-signing-{VerifyKey.from_raw(old_key).key_id.hex()}.retired.key"
    (data_dir / "console-signing.key").rename(data_dir / "console-signing.key.new")
    retired.rename(data_dir / "console-signing.key")
    console = reopened(console, tmp_path)
    assert console.state.signing_key.verify_key.raw == new_key
    assert not (data_dir / "console-signing.key.new").exists()
    assert retired.exists()
    # A new key written but never committed (stop before step 2) is dropped.
    SigningKey.generate().save(data_dir / "console-signing.key.new")
    console = reopened(console, tmp_path)
    assert console.state.signing_key.verify_key.raw == new_key
    assert not (data_dir / "console-signing.key.new").exists()
    assert console.get("/api/v1/console-key").json()["rotations"] == 1
    console.client.close()
    console.state.close()
    # A key file that is not the recorded current key (replaced by hand) is refused:
    # clients would refuse everything it signs.
    SigningKey.generate().save(data_dir / "console-signing.key")
    with pytest.raises(KeyChainBroken, match="restore the key file"):
        open_console(
            ConsoleConfig(
                data_dir=data_dir,
                database_url=console.database_url,  # type: ignore[attr-defined]
                vendor_public_key=vendor_public_key_file(tmp_path),
            ),
            console.clock,
        )


def test_the_client_shell_saves_the_trust_state_the_agent_changed(tmp_path: Path) -> None:
    """ClientService writes trust.json (atomically) when the agent accepted a newer
    document or a rotated key, and only then."""
    key = SigningKey.generate()
    enrolled = TrustState((key.verify_key.raw,), highest_sequence=12)
    enrolled.save(tmp_path / "trust.json")
    service = ClientService.__new__(ClientService)  # only the trust plumbing is used
    service.config = SimpleNamespace(data_dir=tmp_path)  # type: ignore[assignment]
    service.trust = TrustState.load(tmp_path / "trust.json")

    class Agent:
        trust = enrolled

    agent = Agent()
    asyncio.run(service._save_trust(agent))
    assert TrustState.load(tmp_path / "trust.json") == enrolled
    agent.trust = enrolled.with_sequence(15)
    asyncio.run(service._save_trust(agent))
    assert TrustState.load(tmp_path / "trust.json").highest_sequence == 15
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []
