"""Give the memory a finished transfer used back to the system (an idle client is small).

A transfer allocates chunk-sized buffers (1 MiB by default: a chunk being received, a
chunk read for a peer, a batch written to the cache). glibc's ``malloc`` serves such a
block from ``mmap`` and returns it to the system when freed, but only until the first
one is freed: from then on it raises its ``mmap`` threshold to that size (up to 32 MiB,
the "dynamic threshold" of ``mallopt(3)``) and serves later blocks from the heap, which
keeps the freed pages resident, fragmented between small objects. Measured on an idle
client (this checkout's venv) after an 8 MiB download: 12.8 MB of heap, 6.0 MB with
both calls below; a client-only install had 7.1 MB of heap (5.9 MB with them), and its
total did not move beyond the run-to-run noise (about 1 MB): most of an idle client is
code and module objects (``benchmarks/idle_client_rss.py``).

``hold_transfer_buffers_outside_the_heap`` (at start) fixes the threshold at 128 KiB, so
chunk buffers always come from ``mmap`` and leave with ``free``; ``release_idle_memory``
(when the client is idle) hands back the heap's free pages (``malloc_trim``). Both do
nothing where the C library is not glibc (musl, macOS, Windows): the client works the
same, it only keeps what its allocator keeps.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's own default; fixing it (any value) turns the dynamic threshold off."""

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
                if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt"):
                    _libc = libc
            except OSError:
                _libc = None
    return _libc


def hold_transfer_buffers_outside_the_heap() -> bool:
    """Serve every block of ``MMAP_THRESHOLD_BYTES`` or more from ``mmap`` (freed at
    once). Returns whether the allocator took the setting."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_idle_memory() -> bool:
    """Return the heap's free pages to the system. Returns whether any were released."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
