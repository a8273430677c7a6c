"""A restarted device takes the assignment document its earlier process kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.protocol.transfer import ChunkRequested, RefusalReason
from shoal.server.node import ServerNode
from shoal_dev.sim.enterprise import SimOffice, build_enterprise


def test_a_restarted_device_takes_its_kept_document_when_the_server_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device restarted while its server cannot give the document (here it refuses
    every fetch of it; in ``estate-faults-100m`` seed 9 the server died as the device
    asked) is named it by its check-in answer and takes the copy its earlier process
    kept, checked as a fetched one: it has its download back, and serves it, without
    a fetch. Before, it had no download until a fetch succeeded."""
    enterprise = build_enterprise(
        tmp_path,
        [SimOffice("office", "10.1.0.0/24", 3, wan_rate=12.5e6)],
        package_size=1 << 20,
        chunk_size=128 * 1024,
        checkin_seconds=60,
        mode="flow",
    )
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
