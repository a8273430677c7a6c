"""A service manager for the lab: ``python -m shoal_dev.lab.supervise -- PROGRAM ARGS``.

Does for one process what systemd's ``Restart=on-failure`` with ``RestartSec`` does for
``shoal-client.service``: runs the program, starts it again when it exits with a
non-zero code or is killed by a signal, and stops when it exits with 0. SIGTERM or
SIGINT is passed on to the program, then the supervisor exits with the program's code.
Each start is logged on stderr with the previous exit code.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

RESTART_SECONDS = 0.5
"""The lab's RestartSec (the Debian unit waits 5 s)."""


def supervise(argv: list[str]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(number: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(number)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    starts = 0
    while True:
        starts += 1
        child = subprocess.Popen(argv)
        code = child.wait()
        if stopping or code == 0:
            return code
        print(f"supervise: exited with {code}; start {starts + 1}", file=sys.stderr, flush=True)
        time.sleep(RESTART_SECONDS)
        if stopping:
            return code


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.exit("usage: python -m shoal_dev.lab.supervise -- PROGRAM [ARGS...]")
    sys.exit(supervise(argv))


if __name__ == "__main__":
    main()
