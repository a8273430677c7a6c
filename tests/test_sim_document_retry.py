"""A device without its assignment document gets it back soon: a failed fetch is asked
again within seconds, and a restarted device takes the copy its earlier process kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.protocol.transfer import ChunkRequested, RefusalReason
from shoal.server.node import ServerNode
from shoal_dev.sim.enterprise import Enterprise, SimOffice, build_enterprise


def three_devices(
    tmp_path: Path, *, package_size: int = 1 << 20, wan_rate: float = 12.5e6
) -> Enterprise:
    """One office of three devices, a package of 1 MiB unless said, a check-in every 60 s."""
    return build_enterprise(
        tmp_path,
        [SimOffice("office", "10.1.0.0/24", 3, wan_rate=wan_rate)],
        package_size=package_size,
        chunk_size=128 * 1024,
        checkin_seconds=60,
        mode="flow",
    )


def test_a_failed_document_fetch_is_retried_within_seconds_not_a_check_in_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server named the document in its check-in answer, then could not give it (it
    restarted between the two, or its document changed): the device checks in again
    within ``RETRY_SOON`` (5 s) and fetches the one then named. It waited for its next
    check-in before, a check-in period (here 60 s) with nothing to download: in
    ``estate-faults-100m`` seed 9, a device back from a crash just before the server's
    own restart waited 57 s, and its office fetched again over the WAN what it held."""
    enterprise = three_devices(tmp_path)
    refused: list[str] = []
    serve = ServerNode._serve

    def refuse_one_document(
        node: ServerNode, engine: Any, event: ChunkRequested, now: float
    ) -> None:
        # The first blob anyone asks for is the document (it names the manifests).
        if node.core.blob(event.content_id.digest) is not None and not refused:
            refused.append(event.peer[0])
            engine.refuse_chunk(event.peer, event.request_id, RefusalReason.NOT_FOUND, now)
            return
        serve(node, engine, event, now)

    monkeypatch.setattr(ServerNode, "_serve", refuse_one_document)
    enterprise.run(until=30.0, stop=lambda: all(map(enterprise.complete, enterprise.clients)))
    assert refused, "no document fetch was refused: the test no longer tests anything"
    assert all(enterprise.complete(client) for client in enterprise.clients)
    assert enterprise.network.now < 10.0


def test_a_restarted_device_takes_its_kept_document_when_the_server_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device restarted while its server cannot give the document (here it refuses
    every fetch of it; in ``estate-faults-100m`` seed 9 the server died as the device
    asked) is named it by its check-in answer and takes the copy its earlier process
    kept, checked as a fetched one: it has its download back, and serves it, without
    a fetch. Before, it had no download until a fetch succeeded."""
    enterprise = three_devices(tmp_path)
    device = enterprise.clients[0]
    enterprise.run(until=30.0, stop=lambda: enterprise.complete(device))
    assert enterprise.complete(device)
    document = device.agent.assignments.digest
    assert document is not None
    fetches: list[str] = []
    serve = ServerNode._serve

    def refuse_the_document(
        node: ServerNode, engine: Any, event: ChunkRequested, now: float
    ) -> None:
        if event.content_id.digest == document:
            fetches.append(event.peer[0])
            engine.refuse_chunk(event.peer, event.request_id, RefusalReason.NOT_FOUND, now)
            return
        serve(node, engine, event, now)

    monkeypatch.setattr(ServerNode, "_serve", refuse_the_document)
    enterprise.kill(device)
    enterprise.restart(device)
    restarted = enterprise.network.now
    enterprise.run(until=restarted + 30.0, stop=lambda: enterprise.complete(device))
    assert enterprise.complete(device), device.agent.assignments.note
    assert enterprise.network.now < restarted + 5.0
    assert device.host.ip not in fetches
    assert device.agent.counters.documents_kept == 1
    assert "kept on disk" in device.agent.assignments.note
