"""The P2P server's SQL state on SQLite and PostgreSQL: migrations, registry, restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import event

from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.server.core import ClientRecord, ServerCore, ServerSettings
from shoal.server.db import ClientRow, open_database, sqlite_url
from shoal.server.refusal_log import RefusalLog
from shoal.server.registry_report import registry_report, registry_report_sliced
from shoal.server.service import StateStore
from shoal.server.state_saver import StateSaver
from shoal.wire.control import ContentProgress

CONTENT = ContentId(bytes(range(32)))


def test_state_survives_a_restart_on_both_databases(
    tmp_path: Path, database_url: str | None
) -> None:
    url = database_url or sqlite_url(tmp_path / "server.sqlite3")
    state = StateStore(open_database(url))
    state.put({"cursor": "17", "topology": json.dumps({"offices": []})})
    state.put({"cursor": "18"})  # an update, not a second row
    record = ClientRecord(bytes(range(16)), "pc-1", "0.1.0", "10.1.0.5", "10.1.0.0/24", 1.0, 2.0)
    record.public_key, record.last_counter = bytes(range(32)), 2**60 + 7
    record.content[CONTENT] = ContentProgress(CONTENT, 3, 10, 300, 700)
    state.save_clients([record], wall_now=1000.0)
    state.save_clients([record], wall_now=1001.0)
    state.add_bad_peer_reports([("aa" * 16, CONTENT.hex, "10.1.0.66:41442", 4, 1000.0)])

    reopened = StateStore(open_database(url))  # migrations are idempotent
    assert reopened.get("cursor") == "18"
    assert json.loads(reopened.get("topology") or "null") == {"offices": []}
    assert reopened.get("missing") is None
    (loaded,) = reopened.load_clients(now=5.0)
    assert (loaded.device_id, loaded.ip, loaded.subnet) == (
        record.device_id,
        "10.1.0.5",
        "10.1.0.0/24",
    )
    assert loaded.content == record.content
    # The key and the last counter survive: a datagram replayed after a restart is refused.
    assert (loaded.public_key, loaded.last_counter) == (record.public_key, 2**60 + 7)
    state.save_clients([], wall_now=1002.0, expired=[record.device_id])
    assert reopened.load_clients(now=6.0) == []


def test_registry_saves_in_bulk_insert_update_and_delete(
    tmp_path: Path, database_url: str | None
) -> None:
    """More devices than one query's ID list: new rows are inserted, known ones updated
    (their first sighting kept), expired ones deleted, all in one save."""
    url = database_url or sqlite_url(tmp_path / "server.sqlite3")
    state = StateStore(open_database(url))
    records = [
        ClientRecord(n.to_bytes(16, "big"), f"pc-{n}", "0.1.0", "10.1.0.5", "10.1.0.0/24", 1, 2)
        for n in range(1200)
    ]
    for record in records:
        record.public_key, record.last_counter = bytes(32), 1
    state.save_clients(records[:700], wall_now=1000.0)
    for record in records[:700]:
        record.last_counter = 2
    records[150].content[CONTENT] = ContentProgress(CONTENT, 3, 10, 300, 700)
    state.save_clients(records[100:], wall_now=2000.0, expired=[r.device_id for r in records[:50]])
    loaded = {r.device_id: r for r in state.load_clients(now=5.0)}
    assert len(loaded) == 1150  # 50 expired; 50 saved once; 1100 saved again or new
    assert records[0].device_id not in loaded
    assert loaded[records[60].device_id].last_counter == 1  # not in the second save
    assert loaded[records[100].device_id].last_counter == 2
    assert loaded[records[150].device_id].content == records[150].content
    assert loaded[records[1199].device_id].last_counter == 1
    with state.sessions() as session:
        first_seen = dict(session.query(ClientRow.device_id, ClientRow.first_seen).all())
    assert first_seen[records[100].device_id.hex()] == 1000.0  # kept by the update
    assert first_seen[records[1199].device_id.hex()] == 2000.0


def estate(devices: int) -> ServerCore:
    core = ServerCore(ServerSettings(enrollment_token=b"token", identity=DeviceKey.generate()))
    for n in range(devices):
        record = ClientRecord(
            n.to_bytes(16, "big"), f"pc-{n}", "0.1.0", f"10.1.{n // 250}.{n % 250 + 1}", "", 1, 2
        )
        record.public_key, record.last_counter = bytes(32), n
        if n % 3 == 0:
            record.content[CONTENT] = ContentProgress(CONTENT, 3, 10, 300 + n, 700)
        core.clients[record.device_id] = record
    return core


def test_the_registry_report_in_slices_is_the_report_in_one_piece() -> None:
    core = estate(1234)
    assert asyncio.run(registry_report_sliced(core, per_slice=100)) == registry_report(core)


def test_the_registry_saved_from_the_loop_holds_each_change_and_no_expired_device(
    tmp_path: Path,
) -> None:
    core = estate(2500)
    state = StateStore(open_database(sqlite_url(tmp_path / "server.sqlite3")))
    saver = StateSaver(state, core, RefusalLog())
    asyncio.run(saver.save_registry_soon())
    gone = core.clients.pop((7).to_bytes(16, "big"))
    core.expired.append(gone.device_id)
    core.clients[(8).to_bytes(16, "big")].last_counter = 2**40  # a check-in was accepted
    asyncio.run(saver.save_registry_soon())
    loaded = {record.device_id: record for record in state.load_clients(now=0.0)}
    assert len(loaded) == 2499 and gone.device_id not in loaded
    assert loaded[(8).to_bytes(16, "big")].last_counter == 2**40
    assert loaded[(9).to_bytes(16, "big")].content == core.clients[(9).to_bytes(16, "big")].content


def test_a_value_written_again_unchanged_costs_no_transaction(tmp_path: Path) -> None:
    """Each sync round writes what the console said; most rounds change nothing."""
    state = StateStore(open_database(sqlite_url(tmp_path / "server.sqlite3")))
    transactions: list[object] = []
    event.listen(state.sessions.kw["bind"], "begin", transactions.append)
    state.put({"cursor": "18", "activated": "1"})
    assert len(transactions) == 1
    state.put({"cursor": "18", "activated": "1"})
    assert state.get("cursor") == "18"
    assert len(transactions) == 1  # nothing written, nothing read
    state.put({"cursor": "19", "activated": "1"})
    assert len(transactions) == 2
    assert StateStore(open_database(sqlite_url(tmp_path / "server.sqlite3"))).get("cursor") == "19"
