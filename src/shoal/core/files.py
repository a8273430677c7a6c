"""Small files written so that a crash leaves the old one or the new one, whole."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.core import portable


def fsync_directory(path: Path) -> None:
    """Make a rename (or a new file) in ``path`` durable (a no-op on Windows)."""
    portable.fsync_directory(path)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, readable by its owner only (keys, tokens, trust):
    written to a temporary file, fsynced, renamed over ``path``, the directory fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as output:
        output.write(data)
        output.flush()
        os.fsync(output.fileno())
    portable.replace(temporary, path)
    fsync_directory(path.parent)
