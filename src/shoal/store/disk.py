"""The store's file primitives: preallocation, complete writes, whole-file hashing, an
atomic replace, and ENOSPC/EDQUOT turned into ``StoreDiskFull`` naming what did not fit."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shoal.core import portable
from shoal.core.digest import Sha256
from shoal.store.errors import StoreDiskFull

HASH_BLOCK = 1 << 20


@contextmanager
def disk_full_is_named(what: str, directory: Path) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT into ``StoreDiskFull`` naming what did not fit."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = free_bytes(directory)
            raise StoreDiskFull(
                f"disk full in {directory}: no room for {what} ({free} bytes free)"
            ) from None
        raise


def free_bytes(directory: Path) -> int:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def atomic_write(path: Path, data: bytes, *, durable: bool) -> None:
    """Replace ``path`` by ``data``: the old or the new file after any crash (with
    ``durable``, also after a power loss: fsync of the file, then of its directory)."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pwrite_all(descriptor, data, 0)
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        portable.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        portable.fsync_directory(path.parent)


def preallocate(descriptor: int, size: int) -> None:
    """Reserve the package's blocks now, so a full disk shows at ``add``, not mid-way."""
    if size == 0:
        return
    if portable.LINUX_PATHS and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(descriptor, 0, size)
            return
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    os.ftruncate(descriptor, size)


def pwrite_all(descriptor: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = portable.pwrite(descriptor, view, offset)
        view = view[written:]
        offset += written


def hash_descriptor(descriptor: int, size: int) -> bytes:
    digest = Sha256()
    offset = 0
    while offset < size:
        block = portable.pread(descriptor, min(HASH_BLOCK, size - offset), offset)
        if not block:
            break
        digest.update(block)
        offset += len(block)
    return digest.digest()
