"""The console's configuration and what it opens at start (first start creates it all).

First start, in ``DATA_DIR``:

- ``console.db``             the SQLite store (unless a database URL is given)
- ``console-signing.key``    Ed25519 key that signs manifests and assignments (+ ``.pub``;
                             rotated keys are kept as ``console-signing-ID.retired.key``,
                             see ``shoal.console.keys``)
- ``tls/cert.pem``, ``tls/key.pem``  a self-signed certificate (unless one is given)
- ``server-auth.key``        the key P2P servers present on the link
- ``content-keys.key``       wraps the content keys of confidential versions kept in SQL
- ``content/``               packages and their signed manifests

and the first administrator (password from ``SHOAL_ADMIN_PASSWORD`` or generated and
printed once).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from shoal.console import db, keys
from shoal.console.content import ContentDirectory
from shoal.console.security import (
    create_self_signed_certificate,
    hash_password,
    load_or_create_server_key,
    write_secret_file,
)
from shoal.console.throttle import LoginThrottle
from shoal.core.changes import ChangeKind
from shoal.core.errors import ShoalError
from shoal.core.sealing import CONTENT_KEY_SIZE, new_content_key
from shoal.core.signing import SigningKey, VerifyKey
from shoal.licensing import Licence, LicenceError, LicenceStatus, read_licence
from shoal.licensing import evaluate as evaluate_licence
from shoal.topology import Topology

log = logging.getLogger("shoal.console")

Clock = Callable[[], datetime]
ADMIN_PASSWORD_VARIABLE = "SHOAL_ADMIN_PASSWORD"
VENDOR_KEY_VARIABLE = "SHOAL_VENDOR_PUBLIC_KEY"


class ConsoleConfigError(ShoalError):
    """The console cannot start with this configuration; the message says what to give."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """Everything ``shoal console`` is told at start."""

    data_dir: Path
    database_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls: bool = True
    tls_names: tuple[str, ...] = ()
    """Extra names and addresses for the self-signed certificate (the host's address)."""
    vendor_public_key: Path | None = None
    """The vendor's public key that licence keys must be signed by (required: no
    development key is trusted by default)."""
    admin_username: str = "admin"
    online_window_seconds: int = 900
    session_hours: int = 12
    feed_wait_seconds: float = 30.0
    """Longest a P2P server's long poll of the change feed is held (lower it behind a
    proxy that cuts idle connections sooner)."""
    max_upload_bytes: int = 16 << 30
    """Largest application upload accepted (413 beyond it)."""
    trusted_origins: tuple[str, ...] = ()
    """Origins (``https://host[:port]``) besides the console's own from which a browser
    session may make changes: the public address, when a proxy rewrites ``Host``."""
    login_failures: int = 5
    """Failed logins per user name and per source address before backoff starts."""
    login_max_delay_seconds: float = 900.0
    """Longest a throttled user name or address must wait (the backoff doubles to this)."""
    document_validity_seconds: int = 7 * 24 * 3600
    metrics: bool = True
    """Serve Prometheus metrics at ``/metrics`` (``shoal.console.metrics``)."""
    """How long a signed assignment document is valid; the console signs it again when
    less than half is left (``shoal.console.documents``)."""


@dataclass(slots=True)
class TopologyCache:
    """The office tree last loaded, and the generation it was loaded at.

    Loading a large tree (thousands of offices) takes a second; it changes rarely, and
    every assignment and office view needs it. The generation is a row in the
    database, a new random token at every save, so the cache is right whichever
    process saved (and a save that is rolled back leaves a token that matches nothing).
    """

    generation: str = ""
    tree: Topology | None = None


@dataclass(slots=True)
class ConsoleState:
    """The opened console: database, keys, content, clock. Shared by every request."""

    config: ConsoleConfig
    engine: Engine
    sessions: sessionmaker[Session]
    content: ContentDirectory
    signing_key: SigningKey
    vendor_key: VerifyKey
    server_key: str
    cert_path: Path | None
    key_path: Path | None
    clock: Clock = utc_now
    content_wrapping_key: bytes = field(default=b"", repr=False)
    """Wraps confidential content keys at rest (``shoal.console.confidential``)."""
    generated_admin_password: str | None = None
    content_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held from moving a package into place to committing its row, and by deletes."""
    topology_lock: threading.Lock = field(default_factory=threading.Lock)
    """Serialises topology writes (uploads and offices auto-generated from reports)."""
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    topology_cache: TopologyCache = field(default_factory=TopologyCache)
    refusals_logged: set[object] = field(default_factory=set)
    """Report records already warned about (bounded): each is logged once, not per report."""
    key_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while signing a document and while rotating the signing key."""

    def close(self) -> None:
        self.engine.dispose()

    def licence(self, session: Session) -> Licence | None:
        """The saved licence, or None (a saved key that no longer verifies is logged)."""
        row = session.get(db.LicenceKey, 1)
        if row is None:
            return None
        try:
            return read_licence(row.key_text, self.vendor_key)
        except LicenceError as error:
            log.error("saved licence key is not valid for this console: %s", error)
            return None

    def licence_status(self, session: Session) -> LicenceStatus:
        """The licence as shown anywhere, counting seats used now."""
        seats_used = session.scalar(
            select(func.count()).select_from(db.Device).where(db.Device.licensed.is_(True))
        )
        return evaluate_licence(self.licence(session), seats_used or 0, self.clock())

    def record_change(self, session: Session, kind: ChangeKind, subject: str | None = None) -> None:
        """Append to the change feed P2P servers follow (in the caller's transaction)."""
        session.add(db.Change(kind=kind.value, subject=subject, created_at=self.clock()))


def _signing_key(data_dir: Path) -> SigningKey:
    path = data_dir / "console-signing.key"
    if path.exists():
        return SigningKey.load(path)
    key = SigningKey.generate()
    key.save(path)
    key.verify_key.save(data_dir / "console-signing.key.pub")
    log.info("created the console signing key %s", key.verify_key.key_id.hex())
    return key


def _wrapping_key(data_dir: Path) -> bytes:
    """The key that wraps confidential content keys in SQL (32 random bytes, mode 0600)."""
    path = data_dir / "content-keys.key"
    if not path.exists():
        write_secret_file(path, new_content_key())
        log.info("created the key-wrapping key of confidential content keys: %s", path)
    key = path.read_bytes()
    if len(key) != CONTENT_KEY_SIZE:
        raise ValueError(f"{path}: a key-wrapping key has {CONTENT_KEY_SIZE} bytes, not {len(key)}")
    return key


def _certificate(config: ConsoleConfig, now: datetime) -> tuple[Path | None, Path | None]:
    if not config.tls:
        return None, None
    if config.tls_cert is not None or config.tls_key is not None:
        if config.tls_cert is None or config.tls_key is None:
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        return config.tls_cert, config.tls_key
    directory = config.data_dir / "tls"
    directory.mkdir(mode=0o700, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if not (cert_path.exists() and key_path.exists()):
        create_self_signed_certificate(cert_path, key_path, now, config.tls_names)
        log.info("created a self-signed TLS certificate in %s", cert_path)
    return cert_path, key_path


def _vendor_key(config: ConsoleConfig) -> VerifyKey:
    """The one vendor key licences must be signed by; no default is trusted."""
    if config.vendor_public_key is None:
        raise ConsoleConfigError(
            "no vendor public key: give --vendor-public-key FILE (or "
            f"{VENDOR_KEY_VARIABLE}), the public key of the vendor that signs your licence "
            "keys. Self-hosting: make a vendor key with 'shoal keygen vendor.key', start the "
            "console with --vendor-public-key vendor.key.pub and issue licences with "
            "'shoal license issue --vendor-key vendor.key'"
        )
    if b"PRIVATE KEY" in _read_head(config.vendor_public_key):
        raise ConsoleConfigError(
            f"{config.vendor_public_key} is a private key: give the console the vendor's "
            "public key (the .pub file that 'shoal keygen' writes); the private key stays "
            "with whoever issues licences"
        )
    key = VerifyKey.load(config.vendor_public_key)
    log.info("licence keys must be signed by vendor key %s", key.key_id.hex())
    return key


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as key_file:
            return key_file.read(4096)
    except OSError as error:
        raise ConsoleConfigError(
            f"{path}: cannot read the vendor public key ({error.strerror})"
        ) from None


def _first_admin(state: ConsoleState) -> None:
    with state.sessions.begin() as session:
        if session.scalar(select(func.count()).select_from(db.Admin)):
            return
        password = os.environ.get(ADMIN_PASSWORD_VARIABLE)
        if not password:
            password = secrets.token_urlsafe(15)
            state.generated_admin_password = password
        session.add(
            db.Admin(
                username=state.config.admin_username,
                password_hash=hash_password(password),
                created_at=state.clock(),
            )
        )
    log.info("created the first administrator %r", state.config.admin_username)


def open_console(config: ConsoleConfig, clock: Clock = utc_now) -> ConsoleState:
    """Open (on first start: create) the console described by ``config``."""
    vendor_key = _vendor_key(config)  # before anything is created: a refusal leaves no trace
    config.data_dir.mkdir(parents=True, exist_ok=True)
    signing_key = _signing_key(config.data_dir)
    cert_path, key_path = _certificate(config, clock())
    engine, sessions = db.open_database(db.database_url(config.database_url, config.data_dir))
    signing_key = keys.open_key_chain(config.data_dir, sessions, signing_key, clock())
    content = ContentDirectory(config.data_dir / "content")
    state = ConsoleState(
        config=config,
        engine=engine,
        sessions=sessions,
        content=content,
        signing_key=signing_key,
        vendor_key=vendor_key,
        server_key=load_or_create_server_key(config.data_dir / "server-auth.key"),
        cert_path=cert_path,
        key_path=key_path,
        clock=clock,
        login_throttle=LoginThrottle(
            free_failures=config.login_failures, max_delay=config.login_max_delay_seconds
        ),
        content_wrapping_key=_wrapping_key(config.data_dir),
    )
    _first_admin(state)
    if keys.rotated(state) and (resigned := keys.resign_manifests(state)):
        log.warning("signed %d manifests again with the current console key", resigned)
    leftovers = content.clear_temporary()
    if leftovers:
        log.info("removed %d unfinished uploads (never acknowledged)", leftovers)
    with sessions() as session:
        content.remove_orphans(session.scalars(select(db.ApplicationVersion.content_id)))
        status = state.licence_status(session)
    (log.warning if status.seats_over or not status.active else log.info)(
        "licence: %s", status.message
    )
    return state
