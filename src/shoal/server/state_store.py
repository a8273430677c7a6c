"""The P2P server's SQL state: named values (what the console said, the feed cursor),
the client registry and bad-peer reports, so a restarted server serves at once."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from shoal.core.ids import ContentId
from shoal.server.core import ClientRecord
from shoal.server.db import BadPeerRow, ClientRow, StateValue
from shoal.wire.control import ContentProgress


class StateStore:
    """The server's SQL state: named values, the client registry, bad-peer reports."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get(self, key: str) -> str | None:
        with self.sessions() as session:
            row = session.get(StateValue, key)
            return row.value if row is not None else None

    def put(self, values: dict[str, str]) -> None:
        with self.sessions() as session, session.begin():
            for key, value in values.items():
                session.merge(StateValue(key=key, value=value))

    def load_clients(self, now: float) -> list[ClientRecord]:
        with self.sessions() as session:
            rows = session.query(ClientRow).all()
        records = []
        for row in rows:
            if not row.public_key:
                continue  # a device of protocol 1: it registers again with its key
            record = ClientRecord(
                bytes.fromhex(row.device_id),
                row.hostname,
                row.version,
                row.address,
                row.subnet,
                now,
                now,
                public_key=bytes.fromhex(row.public_key),
                last_counter=row.last_counter,
            )
            for entry in row.content:
                progress = ContentProgress(ContentId.from_hex(entry[0]), *entry[1:])
                record.content[progress.content_id] = progress
            records.append(record)
        return records

    def save_clients(
        self, clients: list[ClientRecord], wall_now: float, expired: Sequence[bytes] = ()
    ) -> None:
        with self.sessions() as session, session.begin():
            for device_id in expired:
                row = session.get(ClientRow, device_id.hex())
                if row is not None:
                    session.delete(row)
            for client in clients:
                session.merge(
                    ClientRow(
                        device_id=client.device_id.hex(),
                        hostname=client.hostname,
                        version=client.version,
                        address=client.ip,
                        subnet=client.subnet,
                        first_seen=wall_now,
                        last_seen=wall_now,
                        public_key=client.public_key.hex() or None,
                        last_counter=client.last_counter,
                        content=[
                            [
                                p.content_id.hex,
                                p.chunks_done,
                                p.chunk_count,
                                p.bytes_from_peers,
                                p.bytes_from_server,
                            ]
                            for p in client.content.values()
                        ],
                    )
                )

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
