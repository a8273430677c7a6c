"""A P2P server's client report at estate scale: applied in batches, each its own
transaction, so SQLite's one writer lock is free between them and the console's other
writes (an upload, an assignment) do not fail with "database is locked" while a
10,000-device registry is reported every few seconds (issue 10)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from shoal.console import db, link_api

from .conftest import (
    ADMIN_PASSWORD,
    ADMIN_PASSWORD_VARIABLE,
    CSV_TOPOLOGY,
    FakeClock,
    Harness,
    make_harness,
)
from .test_console_api import register_server

CONTENT = "cd" * 32
DEVICES = 600
BATCH = 250


@pytest.fixture
def sqlite_console(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    monkeypatch.setenv(ADMIN_PASSWORD_VARIABLE, ADMIN_PASSWORD)
    harness = make_harness(tmp_path / "console", None, clock)
    try:
        assert harness.set_topology(CSV_TOPOLOGY).status_code == 200
        assert harness.save_licence(DEVICES, date(2030, 1, 1)).status_code == 200
        register_server(harness)
        yield harness
    finally:
        harness.client.close()
        harness.state.close()


def registry(bytes_done: int) -> dict[str, object]:
    return {
        "clients": [
            {
                "device_id": f"{number:064x}",
                "hostname": f"device-{number}",
                "address": f"10.1.{number // 250}.{number % 250 + 1}",
                "subnet": f"10.1.{number // 250}.0/24",
                "version": "0.1.0",
                "content": [{"content_id": CONTENT, "bytes_done": bytes_done, "complete": False}],
            }
            for number in range(DEVICES)
        ]
    }


def test_a_large_report_leaves_the_write_lock_free_between_batches(
    sqlite_console: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = sqlite_console
    database = console.state.config.data_dir / "console.db"
    monkeypatch.setattr(link_api, "REPORT_BATCH", BATCH)
    batches = 0
    apply_batch = link_api._record_batch

    def batch_then_another_writer(*arguments: object) -> object:
        nonlocal batches
        outcome = apply_batch(*arguments)  # type: ignore[arg-type]
        batches += 1
        # Another writer, with no patience at all: it gets the lock at once, or the
        # report still holds it ("database is locked").
        other = sqlite3.connect(database, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()
        return outcome

    monkeypatch.setattr(link_api, "_record_batch", batch_then_another_writer)
    for bytes_done in (10, 10, 20):  # new devices, the same again, then progress
        answer = console.client.post(
            "/api/v1/link/clients", json=registry(bytes_done), headers=console.link_headers()
        )
        assert answer.status_code == 200, answer.text
        placed = answer.json()["clients"]
        assert len(placed) == DEVICES and not answer.json()["refused"]
        assert all(client["licensed"] for client in placed)
    assert batches == 3 * -(-DEVICES // BATCH)
    with console.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(db.Device)) == DEVICES
        progress = session.execute(
            select(db.DeviceContent.bytes_done, func.count()).group_by(db.DeviceContent.bytes_done)
        ).all()
    assert progress == [(20, DEVICES)]  # one row per device, the newest figure


def test_a_device_reported_twice_in_one_report_keeps_one_row_per_content(
    sqlite_console: Harness,
) -> None:
    console = sqlite_console
    record = registry(5)["clients"][0]  # type: ignore[index]
    later = {**record, "content": [{"content_id": CONTENT, "bytes_done": 9, "complete": True}]}
    answer = console.client.post(
        "/api/v1/link/clients", json={"clients": [record, later]}, headers=console.link_headers()
    )
    assert answer.status_code == 200, answer.text
    with console.state.sessions() as session:
        rows = session.execute(select(db.DeviceContent.bytes_done, db.DeviceContent.complete)).all()
    assert rows == [(9, True)]
