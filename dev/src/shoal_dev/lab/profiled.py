"""``shoal`` under cProfile on its main thread's CPU clock, for the lab's profiling only.

``python -m shoal_dev.lab.profiled OUTPUT ARGS...`` runs ``shoal ARGS...`` and writes the
cProfile stats to OUTPUT when it ends (a signal's ``SystemExit`` included). The clock is
``time.thread_time``: time spent waiting for a CPU on a shared machine, or blocked in
``epoll``, is not counted, so the stats say where the client's own CPU goes. The lab
starts its clients through it when ``SHOAL_LAB_CLIENT_PROFILE`` names a directory
(``shoal_dev.lab.deployment``); never a product option.
"""

from __future__ import annotations

import cProfile
import sys
import time


def main() -> None:
    output, arguments = sys.argv[1], sys.argv[2:]
    sys.argv = ["shoal", *arguments]
    from shoal.cli import main as shoal_main

    profiler = cProfile.Profile(time.thread_time)
    try:
        profiler.runcall(shoal_main)
    except SystemExit:
        pass
    finally:
        profiler.dump_stats(output)


if __name__ == "__main__":
    main()
