"""The P2P server's state in SQL (SQLite by default, PostgreSQL by URL), with migrations.

What must survive a restart: the server's identity and feed cursor, what the console
last said (activation, licence, topology, settings, signed assignments), the client
registry (with each device's public key and last control counter) and bad-peer
reports. Alembic migrations ship in ``shoal/server/migrations``
and run at every start; the server's tables and its migration version table carry a
``server_`` prefix so that they can share a database with the console.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from shoal.sql import make_engine, migrate

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "server_alembic_version"


class Base(DeclarativeBase):
    pass


class StateValue(Base):
    """One named value: cursor, server ID, activation, licence, topology, settings..."""

    __tablename__ = "server_state"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ClientRow(Base):
    """One client of the registry."""

    __tablename__ = "server_clients"
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(40))
    address: Mapped[str] = mapped_column(String(64))
    subnet: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    content: Mapped[list[Any]] = mapped_column(JSON, default=list)
    public_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_counter: Mapped[int] = mapped_column(BigInteger, default=0)
    """The highest control counter accepted from the device: a replay is refused even
    after a restart (saved every report round and at shutdown)."""


class BadPeerRow(Base):
    """A client's report of a peer that served a bad chunk."""

    __tablename__ = "server_bad_peers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reporter: Mapped[str] = mapped_column(String(32))
    content_id: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str] = mapped_column(String(64))
    chunk_index: Mapped[int] = mapped_column(BigInteger)
    reported_at: Mapped[float] = mapped_column(Float)


def open_database(url: str) -> sessionmaker[Any]:
    """Connect, migrate to the newest schema, return a session maker."""
    engine = make_engine(url)
    migrate(engine, MIGRATIONS)
    return sessionmaker(engine, expire_on_commit=False)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
