"""Small files written so that a crash leaves the old one or the new one, whole."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.core import portable


def fsync_directory(path: Path) -> None:
    """Make a rename (or a new file) in ``path`` durable (a no-op on Windows)."""
    portable.fsync_directory(path)


def write_durably(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that after a crash or a power loss it holds the
    old bytes or the new, whole: written to a hidden temporary file beside it (given
    ``mode`` before any byte is written, whatever the umask), fsynced, renamed over
    ``path``, the directory fsynced. The one writer of shoal's small files (manifests,
    settings, keys, results); the content store has its own for chunk-sized files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "wb") as output:
            os.chmod(temporary, mode)
            output.write(data)
            output.flush()
            os.fsync(output.fileno())
        portable.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, readable by its owner only (keys, tokens, trust),
    as ``write_durably`` does."""
    write_durably(path, data, mode=0o600)
