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


UDP_DROP_COUNTERS = ("InErrors", "RcvbufErrors", "SndbufErrors", "NoPorts")


def snmp_counter(protocol: str, counter: str) -> int:
    """A counter of /proc/net/snmp (per network namespace), or 0 where there is none."""
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
    except OSError:
        return 0
    rows = [line.split() for line in lines if line.startswith(protocol + ":")]
    if len(rows) < 2 or counter not in rows[0]:
        return 0
    return int(rows[1][rows[0].index(counter)])


def udp_drops() -> dict[str, int]:
    """The kernel's UDP error counters in this network namespace (buffer overflows...)."""
    return {name: snmp_counter("Udp", name) for name in UDP_DROP_COUNTERS}


def counter_change(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """``after - before`` for each counter."""
    return {name: after[name] - before.get(name, 0) for name in after}
