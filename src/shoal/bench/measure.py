"""What a benchmark process cost: CPU seconds and peak resident memory.

Each benchmark child measures itself and writes the figures to its result file, so
the numbers are the child's own (not ``ip netns exec`` or the parent's).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU time used by this process so far, and the wall clock when sampled."""

    user_seconds: float
    system_seconds: float
    wall_seconds: float

    @classmethod
    def now(cls) -> CpuSample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(usage.ru_utime, usage.ru_stime, time.monotonic())

    def since(self, start: CpuSample) -> dict[str, float]:
        """CPU and wall seconds between ``start`` and this sample."""
        return {
            "user_seconds": self.user_seconds - start.user_seconds,
            "system_seconds": self.system_seconds - start.system_seconds,
            "cpu_seconds": (self.user_seconds + self.system_seconds)
            - (start.user_seconds + start.system_seconds),
            "wall_seconds": self.wall_seconds - start.wall_seconds,
        }


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident set size of ``pid`` (``VmHWM`` in /proc), or ru_maxrss elsewhere."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
