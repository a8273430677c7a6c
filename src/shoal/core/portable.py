"""The one switch between Linux-only code paths and their portable fallbacks.

The client runs on Linux, Windows and macOS. Where Linux offers something better
(UDP GSO/GRO and ICMP error queues, ``O_DIRECT``, ``posix_fadvise``/``fallocate``,
``pread``/``pwrite`` on a shared descriptor, fsync of a directory, asyncio signal
handlers) the code asks ``LINUX_PATHS`` here, and takes the portable path otherwise.
``SHOAL_PORTABLE=1`` in the environment turns every Linux-only path off on Linux too,
so CI runs the client's tests on the fallbacks that Windows takes (``make
test-portable``). This module is the only place that reads the variable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

SWITCH_VARIABLE = "SHOAL_PORTABLE"


def linux_paths_enabled(
    environ: Mapping[str, str] = os.environ, platform: str = sys.platform
) -> bool:
    """True where the Linux-only paths may run: on Linux, unless the switch is set."""
    return platform.startswith("linux") and environ.get(SWITCH_VARIABLE, "") in ("", "0")


LINUX_PATHS = linux_paths_enabled()
POSIX_FILES = LINUX_PATHS or (os.name == "posix" and os.environ.get(SWITCH_VARIABLE) != "1")
"""``pread``/``pwrite``/directory fsync: POSIX has them; Windows (or the switch) not."""

# Without pread/pwrite, a seek and a read must not interleave with another thread's.
_SEEK_LOCK = threading.Lock()
REPLACE_ATTEMPTS = 20
REPLACE_PAUSE_SECONDS = 0.05


def pread(descriptor: int, length: int, offset: int) -> bytes:
    """``os.pread``, or a locked seek-and-read where it does not exist (Windows)."""
    if POSIX_FILES:
        return os.pread(descriptor, length, offset)
    with _SEEK_LOCK:
        os.lseek(descriptor, offset, os.SEEK_SET)
        return os.read(descriptor, length)


def preadinto(descriptor: int, buffer: memoryview, offset: int) -> int:
    """``os.preadv`` into one buffer, or a ``pread`` and a copy where it does not exist."""
    if POSIX_FILES and hasattr(os, "preadv"):
        return os.preadv(descriptor, [buffer], offset)
    data = pread(descriptor, len(buffer), offset)
    buffer[: len(data)] = data
    return len(data)


def pwrite(descriptor: int, data: bytes | bytearray | memoryview, offset: int) -> int:
    """``os.pwrite``, or a locked seek-and-write where it does not exist (Windows)."""
    if POSIX_FILES:
        return os.pwrite(descriptor, data, offset)
    with _SEEK_LOCK:
        os.lseek(descriptor, offset, os.SEEK_SET)
        return os.write(descriptor, data)


def fsync_directory(path: Path | str) -> None:
    """Make a rename in ``path`` durable. Windows cannot open a directory to fsync it
    (NTFS journals the rename itself), so the portable path does nothing."""
    if not POSIX_FILES:
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace(source: Path | str, target: Path | str) -> None:
    """``os.replace``, retried while ``target`` is open elsewhere: Windows refuses to
    replace a file another process holds open (``shoal client status`` reading the
    status file), POSIX never does; after about a second the error stands."""
    for _attempt in range(REPLACE_ATTEMPTS - 1):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if LINUX_PATHS:
                raise
            time.sleep(REPLACE_PAUSE_SECONDS)
    os.replace(source, target)
