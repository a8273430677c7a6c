"""An idle client gives back the memory its transfers used (issue 11: <= 40 MB idle)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shoal.client.memory import hold_transfer_buffers_outside_the_heap

MIB = 1 << 20
glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hold_transfer_buffers_outside_the_heap(),
    reason="glibc's malloc only (elsewhere both calls do nothing)",
)


def resident_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 1e6


@glibc_only
def test_chunk_buffers_leave_with_free_once_the_threshold_is_held() -> None:
    """Without the fixed threshold, glibc serves 1 MiB blocks from the heap once a larger
    block was freed, and 32 freed chunk buffers stay resident; with it they go."""
    assert hold_transfer_buffers_outside_the_heap()
    batch = bytearray(4 * MIB)  # a 4 MiB read batch, freed: glibc would now raise its
    del batch  # threshold to 4 MiB and serve 1 MiB chunk buffers from the heap
    before = resident_mb()
    buffers = [bytearray(MIB) for _ in range(32)]
    for buffer in buffers:
        buffer[::4096] = b"y" * len(buffer[::4096])  # touched, as a received chunk is
    assert resident_mb() - before > 30
    del buffers
    assert resident_mb() - before < 4
