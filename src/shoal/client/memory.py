"""Give the memory a finished transfer used back to the system (an idle client is small).

A transfer allocates chunk-sized buffers (1 MiB by default: a chunk being received, which
the engine hands on to the disk thread; a chunk read for a peer; a batch written to the
cache). glibc's ``malloc`` serves the first such blocks from ``mmap``; once one is freed
it raises its ``mmap`` threshold to that size (the "dynamic threshold" of ``mallopt(3)``)
and serves later ones from the heap, where freed blocks are reused at once, but whose
freed pages stay resident, fragmented between small objects, when the transfer ends.
``release_idle_memory`` (called at each status tick while no download is on its way)
hands those pages back (``malloc_trim``).

Chunk buffers are left on the heap on purpose. Fixing the threshold low (128 KiB, so
that every chunk buffer comes from ``mmap`` and leaves with ``free``; this client did so
until December 2026) makes each chunk-sized allocation a fresh mapping: 1.2-1.7 ms per
MiB on the development machine at load 6, 5 ms at load 25, against 0.05 ms from the
heap (a received chunk then cost two: its buffer and the event's copy, gone since); and
it bought nothing once the idle trim runs: 34.4 against 34.5 MB idle RSS, alternated
(``benchmarks/idle_client_rss.py --against``, docs/network.md "Disk, memory and CPU").

Nothing happens where the C library is not glibc (musl, macOS, Windows): the client
works the same, it only keeps what its allocator keeps.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

_libc: Any = None
_looked = False


def _glibc() -> Any:
    """glibc, if this process runs on it; else None."""
    global _libc, _looked
    if not _looked:
        _looked = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None)  # this process's symbols: its C library's
                if hasattr(libc, "malloc_trim"):
                    _libc = libc
            except OSError:
                _libc = None
    return _libc


def release_idle_memory() -> bool:
    """Return the heap's free pages to the system. Returns whether any were released."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
