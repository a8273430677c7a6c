"""Readiness checks shared by the console, the P2P server and ``shoal doctor``.

*Live* means the process answers; *ready* means it can do its job: its database answers
a query and its content directory exists, is writable and has room. A load balancer or
an orchestrator routes to ready instances and restarts ones that are not live; the
checks are cheap (one ``SELECT 1``, one small file created and removed, not flushed).
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

MIN_FREE_BYTES = 64 << 20
"""Less free space than this in a content directory makes an instance not ready."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: its name, whether it passed, what was seen, and the fix if it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def check_database(engine: Engine, name: str = "database") -> CheckResult:
    """The database answers ``SELECT 1``."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        cause = str(getattr(error, "orig", None) or error).splitlines()[0]
        return CheckResult(
            name,
            False,
            f"{engine.url.render_as_string(hide_password=True)}: {cause}",
            "start the database server, or check --database-url and its credentials",
        )
    return CheckResult(name, True, f"{engine.url.get_backend_name()} answers")


def check_directory(
    path: Path, name: str = "content directory", min_free: int = MIN_FREE_BYTES
) -> CheckResult:
    """``path`` is a directory we can write a file in, with ``min_free`` bytes free."""
    if not path.is_dir():
        return CheckResult(
            name, False, f"{path}: missing", f"create {path} or point --data-dir at the data"
        )
    probe = path / f".health-{uuid.uuid4().hex}"
    try:
        # No fsync: creating the file proves writability; a flush to disk would make a
        # health probe wait behind every upload's writes.
        with open(probe, "wb") as handle:
            handle.write(b"ok")
    except OSError as error:
        return CheckResult(
            name,
            False,
            f"{path}: cannot write ({error.strerror or error})",
            f"give the service's user write access to {path} (or free the disk)",
        )
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(path).free
    if free < min_free:
        return CheckResult(
            name,
            False,
            f"{path}: {free >> 20} MiB free (below {min_free >> 20} MiB)",
            "free space on that file system or move the data directory",
        )
    return CheckResult(name, True, f"{path}: writable, {free >> 20} MiB free")


def report(checks: list[CheckResult], version: str) -> tuple[int, dict[str, object]]:
    """HTTP status (200 or 503) and body of a readiness answer."""
    ready = all(check.ok for check in checks)
    body: dict[str, object] = {
        "status": "ok" if ready else "failing",
        "version": version,
        "checks": [check.as_dict() for check in checks],
    }
    return (200 if ready else 503), body
