"""``shoal console backup|restore`` and ``shoal server backup|restore``.

A backup is a directory:

    BACKUP/
      backup.json      what it is: role, shoal version, time, database kind, and the
                       SHA-256 of every file (a restore checks them all first)
      database.sqlite3 an SQLite online backup (consistent while the service runs), or
      database.pgdump  ``pg_dump --format=custom`` of the PostgreSQL database
      files/...        the rest of the data directory: keys (console signing key and its
                       retired predecessors, key-wrapping key, server authentication key,
                       a server's own key), TLS certificate, content

Keys and certificate are what make a restored console the same console to its servers
(the authentication key, the certificate they pin with ``--console-ca``) and to its
clients (the signing key they pinned at enrollment): nobody enrolls again. The backup
holds secrets: it is written with mode 0700 and must be stored like the keys themselves.

The database is copied first, then the files; content uploaded between the two is in
the files without its row (removed as an orphan at the next start), so a backup taken
while the console runs is consistent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shoal import __version__
from shoal.core.errors import ShoalError

MANIFEST = "backup.json"
FILES = "files"
SQLITE_DUMP = "database.sqlite3"
POSTGRES_DUMP = "database.pgdump"
FORMAT = 1


class BackupError(ShoalError):
    """A backup or restore that cannot be done (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class Role:
    """Where a role keeps its SQLite database, and what in its data directory is not
    worth saving (rebuilt or temporary)."""

    name: str
    sqlite_file: str
    skip: tuple[str, ...] = ()


CONSOLE = Role("console", "console.db", skip=("content/tmp",))
SERVER = Role("server", "server.sqlite3")
#: Each role by its name (``shoal console backup``, ``shoal server backup``).
ROLES = {role.name: role for role in (CONSOLE, SERVER)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _postgres_url(database_url: str) -> str:
    """The libpq URL of a SQLAlchemy one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    parts = urlsplit(database_url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise BackupError(f"{scheme}: only SQLite (default) and PostgreSQL URLs are supported")
    return parts._replace(scheme="postgresql").geturl()


def _run(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise BackupError(
            f"{command[0]} not found: install the PostgreSQL client tools for {what}"
        ) from None
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or "").strip().splitlines()
        raise BackupError(f"{command[0]} failed: {detail[-1] if detail else error}") from None


def _skipped(relative: Path, role: Role) -> bool:
    text = relative.as_posix()
    if text in (role.sqlite_file, f"{role.sqlite_file}-wal", f"{role.sqlite_file}-shm"):
        return True
    if relative.name.startswith(".") and relative.name.endswith(".tmp"):
        return True
    return any(text == skip or text.startswith(skip + "/") for skip in role.skip)


def backup(role: Role, data_dir: Path, database_url: str | None, target: Path) -> dict[str, Any]:
    """Write a backup of ``data_dir`` (and its database) into the new directory ``target``."""
    if not data_dir.is_dir():
        raise BackupError(f"{data_dir}: no such data directory (give --data-dir)")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target}: not empty (a backup goes into a new directory)")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    if database_url:
        database = "postgresql"
        _run(
            [
                "pg_dump",
                "--format=custom",
                "--no-owner",
                "--file",
                str(target / POSTGRES_DUMP),
                _postgres_url(database_url),
            ],
            "a PostgreSQL backup",
        )
    else:
        database = "sqlite"
        source_path = data_dir / role.sqlite_file
        if not source_path.exists():
            raise BackupError(f"{source_path}: no database (is --data-dir the {role.name}'s?)")
        # The online backup API: a consistent copy even while the service writes.
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        copy = sqlite3.connect(target / SQLITE_DUMP)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
    files: dict[str, str] = {}
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if path.is_dir() or _skipped(relative, role):
            continue
        destination = target / FILES / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        files[relative.as_posix()] = _sha256(destination)
    dump = target / (POSTGRES_DUMP if database == "postgresql" else SQLITE_DUMP)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "role": role.name,
        "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "database": database,
        "database_sha256": _sha256(dump),
        "files": files,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_manifest(source: Path, role: Role) -> dict[str, Any]:
    """The backup's description, after checking every file's hash."""
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise BackupError(f"{source}: not a shoal backup ({error})") from None
    if manifest.get("format") != FORMAT or manifest.get("role") != role.name:
        raise BackupError(
            f"{source}: a backup of a {manifest.get('role')!r} (format "
            f"{manifest.get('format')}), not of a {role.name}"
        )
    dump = source / (POSTGRES_DUMP if manifest["database"] == "postgresql" else SQLITE_DUMP)
    if not dump.exists() or _sha256(dump) != manifest["database_sha256"]:
        raise BackupError(f"{dump}: missing or damaged (its SHA-256 differs)")
    for name, digest in manifest["files"].items():
        path = source / FILES / name
        if not path.exists() or _sha256(path) != digest:
            raise BackupError(f"{path}: missing or damaged (its SHA-256 differs)")
    return manifest


def restore(role: Role, source: Path, data_dir: Path, database_url: str | None) -> dict[str, Any]:
    """Restore the backup ``source`` into the empty (or new) ``data_dir``.

    With ``database_url``, the PostgreSQL database it names must exist and be empty;
    without it the database is SQLite in ``data_dir``. A SQLite backup restores into
    PostgreSQL and back only through the console's API: refused here.
    """
    manifest = read_manifest(source, role)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(
            f"{data_dir}: not empty (restore into a new data directory; move the old one away)"
        )
    wanted = "postgresql" if database_url else "sqlite"
    if manifest["database"] != wanted:
        raise BackupError(
            f"the backup holds a {manifest['database']} database; restoring it needs "
            + (
                "--database-url of an empty PostgreSQL database"
                if not database_url
                else "no --database-url"
            )
        )
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if database_url:
        _run(
            [
                "pg_restore",
                "--no-owner",
                "--exit-on-error",
                "--dbname",
                _postgres_url(database_url),
                str(source / POSTGRES_DUMP),
            ],
            "a PostgreSQL restore",
        )
    else:
        shutil.copy2(source / SQLITE_DUMP, data_dir / role.sqlite_file)
    for name in manifest["files"]:
        destination = data_dir / name
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(source / FILES / name, destination)
    return manifest
