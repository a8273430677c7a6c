"""The console's tables (SQLAlchemy 2), the engine, and migrations applied at start.

The same schema runs on SQLite (the default: one file in the data directory) and on
PostgreSQL (by URL, driver psycopg 3). Alembic migrations ship inside the package
(``shoal/console/migrations``) and ``open_database`` upgrades to the newest at start.
Times are stored as timezone-aware UTC datetimes; the caller passes them in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from shoal import sql
from shoal.sql import make_engine, normalise_url

MIGRATIONS = Path(__file__).with_name("migrations")


class UtcDateTime(TypeDecorator[datetime]):
    """A datetime stored in UTC and always read back timezone-aware (SQLite drops it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Admin(Base):
    __tablename__ = "admins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class LoginSession(Base):
    __tablename__ = "login_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Application(Base):
    __tablename__ = "applications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApplicationVersion(Base):
    __tablename__ = "application_versions"
    __table_args__ = (UniqueConstraint("application_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[str] = mapped_column(String(100))
    content_id: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Confidential versions (encrypted when packed: size, sha256 and chunks describe the
    # ciphertext): the content key wrapped under DATA_DIR/content-keys.key (hex), and
    # the plaintext's size and SHA-256. NULL for plaintext versions.
    content_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    plaintext_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    plaintext_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The install specification (``shoal.install_spec``, as signed); NULL: none.
    install_spec: Mapped[Any | None] = mapped_column(JSON, nullable=True)


class OfficeRow(Base):
    __tablename__ = "offices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    parent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    type: Mapped[str] = mapped_column(String(20))
    subnets: Mapped[list[str]] = mapped_column(JSON)
    position: Mapped[int] = mapped_column(Integer)
    auto_generated: Mapped[bool] = mapped_column(Boolean, default=False)


class Server(Base):
    __tablename__ = "servers"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(40))
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Device(Base):
    __tablename__ = "devices"
    # Covers the join from device_content to the device's office (assignment progress).
    __table_args__ = (Index("ix_devices_id_office", "id", "office"),)
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200), index=True)
    address: Mapped[str] = mapped_column(String(64))
    subnet: Mapped[str] = mapped_column(String(64))
    office: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    version: Mapped[str] = mapped_column(String(40))
    server_id: Mapped[str] = mapped_column(String(100))
    licensed: Mapped[bool] = mapped_column(Boolean)
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    public_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """X25519 public key (hex); the device ID is ``device_id_of`` it."""


class RetiredDevice(Base):
    """A device retired in the console: whatever its server reports later, it never
    again receives a confidential content key (a stolen or uninstalled device)."""

    __tablename__ = "retired_devices"
    device_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    retired_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DeviceContent(Base):
    __tablename__ = "device_content"
    # Covers a content's holders and their progress (assignment progress by content).
    __table_args__ = (
        Index("ix_device_content_progress", "content_id", "device_id", "complete", "bytes_done"),
    )
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    content_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bytes_done: Mapped[int] = mapped_column(BigInteger)
    complete: Mapped[bool] = mapped_column(Boolean)


class InstallResult(Base):
    """A device's newest install report for one content (``INSTALL_REPORT``, relayed by
    its P2P server); pending and downloading are derived, not stored."""

    __tablename__ = "install_results"
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    content_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer)
    exit_code: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    output_tail: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Assignment(Base):
    __tablename__ = "assignments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("application_versions.id", ondelete="CASCADE"), index=True
    )
    target_kind: Mapped[str] = mapped_column(String(20))
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    background: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DownloadStat(Base):
    __tablename__ = "download_stats"
    server_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    content_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    office: Mapped[str] = mapped_column(String(200), primary_key=True)
    bytes_from_peers: Mapped[int] = mapped_column(BigInteger)
    bytes_from_server: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Change(Base):
    """The change feed P2P servers follow: one row per thing they must fetch again."""

    __tablename__ = "changes"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class SignedDocument(Base):
    """The newest signed document of a kind (``assignments``) and its sequence number.

    ``sequence`` only grows (a conditional UPDATE from the value read, so two writers
    never sign the same number); ``body`` is the canonical JSON of what the document
    says, to tell whether it must be signed again.
    """

    __tablename__ = "signed_documents"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    envelope: Mapped[Any] = mapped_column(JSON)
    key_id: Mapped[str] = mapped_column(String(16))
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConsoleKey(Base):
    """The console's signing keys, oldest first: each later one with the rotation
    statement the one before it signed."""

    __tablename__ = "console_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64), unique=True)
    statement: Mapped[str | None] = mapped_column(Text, nullable=True)
    signature: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class WanTotal(Base):
    """The servers' running totals summed over all content and offices, sampled when
    statistics arrive (at most one row per ``shoal.console.services.reports.SAMPLE``):
    the history behind the WAN-saved chart. Bytes in a period are differences."""

    __tablename__ = "wan_totals"
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    bytes_from_peers: Mapped[int] = mapped_column(BigInteger)
    bytes_from_server: Mapped[int] = mapped_column(BigInteger)


class BannedPeer(Base):
    """A peer banned in an office by a P2P server (devices reported bad chunks from it),
    as that server last reported: each report replaces the server's rows."""

    __tablename__ = "banned_peers"
    server_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    office: Mapped[str] = mapped_column(String(200), primary_key=True)
    peer_ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    content_id: Mapped[str] = mapped_column(String(64))
    reporters: Mapped[int] = mapped_column(Integer)
    banned_at: Mapped[datetime] = mapped_column(UtcDateTime())
    until: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RendezvousHolder(Base):
    """A device that brings a content into its office over the WAN now (a rendezvous
    stripe holder), as its P2P server last reported: each report replaces the server's
    rows."""

    __tablename__ = "rendezvous_holders"
    server_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    office: Mapped[str] = mapped_column(String(200), primary_key=True)
    content_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    stripe: Mapped[int] = mapped_column(Integer)
    """Its place among the content's holders in the office (0: the first)."""
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime())


class LicenceKey(Base):
    __tablename__ = "licence"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_text: Mapped[str] = mapped_column(Text)
    saved_at: Mapped[datetime] = mapped_column(UtcDateTime())


def database_url(url: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL: SQLite in ``data_dir`` by default; psycopg 3 for PostgreSQL."""
    if not url:
        return f"sqlite:///{data_dir / 'console.db'}"
    return normalise_url(url)


def migrate(engine: Engine) -> None:
    """Apply every shipped migration not yet applied (idempotent)."""
    sql.migrate(engine, MIGRATIONS)


def open_database(url: str) -> tuple[Engine, sessionmaker[Any]]:
    """Connect, migrate to the newest schema, and return the engine and a session maker."""
    engine = make_engine(url)
    migrate(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)
