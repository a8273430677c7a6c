"""The P2P server's SQL state: named values (what the console said, the feed cursor),
the client registry, the rendezvous leases and bad-peer reports, so a restarted server
serves at once and keeps each office's one WAN copy."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from shoal.core.ids import ContentId
from shoal.server.core import ClientRecord
from shoal.server.db import BadPeerRow, ClientRow, StateValue
from shoal.wire.control import ContentProgress


class RowState(NamedTuple):
    """What of a registry entry its database row keeps: plain values, so that the row can
    be built and written by a worker thread while the event loop changes the entry."""

    device_id: bytes
    hostname: str
    version: str
    address: str
    subnet: str
    public_key: bytes
    last_counter: int
    content: tuple[ContentProgress, ...]


_UPDATED_COLUMNS = (
    "hostname",
    "version",
    "address",
    "subnet",
    "last_seen",
    "public_key",
    "last_counter",
    "content",
)
"""What an update writes (``first_seen`` stays as inserted)."""


def row_state(client: ClientRecord) -> RowState:
    return RowState(
        client.device_id,
        client.hostname,
        client.version,
        client.ip,
        client.subnet,
        client.public_key,
        client.last_counter,
        tuple(client.content.values()),
    )


def client_row(state: RowState, wall_now: float) -> dict[str, Any]:
    """A registry entry's database row, as column values (``first_seen`` is kept by an
    update: only an insert sets it)."""
    return {
        "device_id": state.device_id.hex(),
        "hostname": state.hostname,
        "version": state.version,
        "address": state.address,
        "subnet": state.subnet,
        "first_seen": wall_now,
        "last_seen": wall_now,
        "public_key": state.public_key.hex() or None,
        "last_counter": state.last_counter,
        "content": [
            [
                p.content_id.hex,
                p.chunks_done,
                p.chunk_count,
                p.bytes_from_peers,
                p.bytes_from_server,
            ]
            for p in state.content
        ],
    }


ROWS_PER_QUERY = 500
"""Device IDs per ``IN (...)`` list: well under SQLite's and PostgreSQL's parameter limits."""
_CLIENTS = cast(Table, ClientRow.__table__)
_UPDATE_CLIENT = (
    update(_CLIENTS)
    .where(_CLIENTS.c.device_id == bindparam("row_device_id"))
    .values({column: bindparam(column) for column in _UPDATED_COLUMNS})
)


def restored_record(state: RowState, now: float) -> ClientRecord:
    """A registry entry as a restarted server takes it back (seen ``now``)."""
    record = ClientRecord(
        state.device_id,
        state.hostname,
        state.version,
        state.address,
        state.subnet,
        now,
        now,
        public_key=state.public_key,
        last_counter=state.last_counter,
    )
    for progress in state.content:
        record.content[progress.content_id] = progress
    return record


LEASES_KEY = "leases"
"""The named value holding the rendezvous leases and the delivery ledger (JSON)."""


class StateStore:
    """The server's SQL state: named values, the client registry, bad-peer reports."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._saved_rows: dict[bytes, RowState] = {}
        """Per device, what its registry row last written holds (``changed_rows``)."""
        self._values: dict[str, str] = {}
        """Named values as last read or written by this store (the server process is the
        only writer of its state): each sync round reads the cursor and writes what the
        console said, on the event loop, and most rounds change nothing (issue 10)."""

    def changed_rows(
        self, clients: Iterable[ClientRecord], expired: Sequence[bytes]
    ) -> list[RowState]:
        """The registry entries whose row differs from the one last handed out (as plain
        values, to write with ``save_rows``); ``expired`` devices are forgotten."""
        for device_id in expired:
            self._saved_rows.pop(device_id, None)
        changed = []
        for client in clients:
            state = row_state(client)
            if self._saved_rows.get(client.device_id) != state:
                self._saved_rows[client.device_id] = state
                changed.append(state)
        return changed

    def get(self, key: str) -> str | None:
        value = self._values.get(key)
        if value is not None:
            return value
        with self.sessions() as session:
            row = session.get(StateValue, key)
            if row is None:
                return None
            self._values[key] = row.value
            return row.value

    def put(self, values: dict[str, str]) -> None:
        """Write the values that differ from what this store last read or wrote (none:
        no transaction at all)."""
        changed = {key: value for key, value in values.items() if self._values.get(key) != value}
        if not changed:
            return
        with self.sessions() as session, session.begin():
            for key, value in changed.items():
                session.merge(StateValue(key=key, value=value))
        self._values.update(changed)

    def load_clients(self, now: float) -> list[ClientRecord]:
        with self.sessions() as session:
            rows = session.query(ClientRow).all()
        records = []
        for row in rows:
            if not row.public_key:
                continue  # a device of protocol 1: it registers again with its key
            content = tuple(
                ContentProgress(ContentId.from_hex(entry[0]), *entry[1:]) for entry in row.content
            )
            state = RowState(
                bytes.fromhex(row.device_id),
                row.hostname,
                row.version,
                row.address,
                row.subnet,
                bytes.fromhex(row.public_key),
                row.last_counter,
                content,
            )
            records.append(restored_record(state, now))
        return records

    def save_leases(self, lease_state: dict[str, Any], wall_now: float) -> None:
        """Blocking: write the leases and delivery ledger (``WanCopy.lease_state``)."""
        self.put({LEASES_KEY: json.dumps({"saved_at": wall_now, "state": lease_state})})

    def load_leases(self, wall_now: float) -> tuple[dict[str, Any], float] | None:
        """The leases last saved and how many seconds ago (wall clock), if any."""
        text = self.get(LEASES_KEY)
        if text is None:
            return None
        saved = json.loads(text)
        return saved["state"], max(0.0, wall_now - float(saved["saved_at"]))

    def save_clients(
        self, clients: list[ClientRecord], wall_now: float, expired: Sequence[bytes] = ()
    ) -> None:
        self.save_rows([row_state(client) for client in clients], wall_now, expired)

    def save_rows(
        self, states: list[RowState], wall_now: float, expired: Sequence[bytes] = ()
    ) -> None:
        """Blocking: write these registry entries, delete ``expired`` (a worker thread may
        run it: ``states`` are plain values).

        In bulk, one transaction: a query per ``ROWS_PER_QUERY`` devices to learn which
        rows exist, then one INSERT and one UPDATE statement over many rows. (An ORM
        ``merge`` per row cost ~1 ms each: 10,000 devices held the GIL for seconds in
        the worker thread, and the control path answered late meanwhile, issue 10.)"""
        rows = {row["device_id"]: row for row in (client_row(s, wall_now) for s in states)}
        gone = [device_id.hex() for device_id in expired]
        with self.sessions() as session, session.begin():
            for start in range(0, len(gone), ROWS_PER_QUERY):
                chunk = gone[start : start + ROWS_PER_QUERY]
                session.execute(delete(_CLIENTS).where(_CLIENTS.c.device_id.in_(chunk)))
            known: set[str] = set()
            ids = list(rows)
            for start in range(0, len(ids), ROWS_PER_QUERY):
                chunk = ids[start : start + ROWS_PER_QUERY]
                query = select(_CLIENTS.c.device_id).where(_CLIENTS.c.device_id.in_(chunk))
                known.update(session.scalars(query))
            new = [row for device_id, row in rows.items() if device_id not in known]
            if new:
                session.execute(insert(_CLIENTS), new)
            changed = [
                {"row_device_id": device_id, **{c: row[c] for c in _UPDATED_COLUMNS}}
                for device_id, row in rows.items()
                if device_id in known
            ]
            if changed:
                session.execute(_UPDATE_CLIENT, changed)

    def add_bad_peer_reports(self, reports: list[tuple[str, str, str, int, float]]) -> None:
        with self.sessions() as session, session.begin():
            for reporter, content_id, peer, chunk_index, at in reports:
                session.add(
                    BadPeerRow(
                        reporter=reporter,
                        content_id=content_id,
                        peer=peer,
                        chunk_index=chunk_index,
                        reported_at=at,
                    )
                )
