"""Paired runs of the console's UI benchmarks: an old checkout against this one, alternated.

On a shared machine one run of ``console_api.py`` or ``console_dashboard.py`` says more
about the load than about the code. This runs the *same* benchmark script (this
checkout's) with each checkout's own ``.venv`` (so each one's ``shoal``), alternating
old and new ``--runs`` times (old first, then new first, ...), and prints per call the
median of the runs' p95 with their spread (min-max), the slowest call of each run, and
the load average before each run. Figures, not assertions.

    .venv/bin/python benchmarks/console_pairs.py OLD_CHECKOUT [--runs 3] [--rounds 30]
        [--sqlite-only] [--dashboard-rounds 5] [--skip-api] [--skip-dashboard]

OLD_CHECKOUT: e.g. ``git worktree add --detach ../shoal-main main`` with its own
``make .venv/.installed``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW = HERE.parent
CALL = re.compile(r"^\s+(/api/\S+)\s+([\d.]+)\s+([\d.]+)$")
SECTION = re.compile(r"^(SQLite|PostgreSQL): p50 / p95")
DRAWN = re.compile(
    r"page load to (dashboard drawn|every view loaded), \d+ loads: "
    r"median ([\d.]+) s, max ([\d.]+) s"
)

Figures = dict[tuple[str, str], list[float]]  # (database, call) -> p95 of each run


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _run(checkout: Path, script: str, arguments: list[str]) -> str:
    command = [str(checkout / ".venv" / "bin" / "python"), str(HERE / script), *arguments]
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True, check=True)
    return done.stdout


def _api(output: str, figures: Figures, slowest: dict[str, list[float]]) -> None:
    database = ""
    for line in output.splitlines():
        section = SECTION.match(line)
        if section:
            database = section.group(1)
            continue
        call = CALL.match(line)
        if call and database:
            figures[(database, call.group(1))].append(float(call.group(3)))
    for database in ("SQLite", "PostgreSQL"):
        found = [p95s[-1] for (db, _), p95s in figures.items() if db == database and p95s]
        if found:
            slowest[database].append(max(found))


def _spread(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dashboard-rounds", type=int, default=5)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-dashboard", action="store_true")
    arguments = parser.parse_args()
    checkouts = {"old": arguments.old.resolve(), "new": NEW}
    api: dict[str, Figures] = {name: defaultdict(list) for name in checkouts}
    slowest: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in checkouts}
    drawn: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in checkouts}
    api_arguments = ["--rounds", str(arguments.rounds)]
    if arguments.sqlite_only:
        api_arguments.append("--sqlite-only")
    for run in range(arguments.runs):
        order = ("old", "new") if run % 2 == 0 else ("new", "old")
        for name in order:
            if not arguments.skip_api:
                print(f"run {run + 1}, {name}: console_api.py, load average {_load()}", flush=True)
                output = _run(checkouts[name], "console_api.py", api_arguments)
                _api(output, api[name], slowest[name])
            if not arguments.skip_dashboard:
                print(f"run {run + 1}, {name}: console_dashboard.py, load {_load()}", flush=True)
                output = _run(
                    checkouts[name],
                    "console_dashboard.py",
                    ["--rounds", str(arguments.dashboard_rounds)],
                )
                for what, median, worst in DRAWN.findall(output):
                    drawn[name][f"{what}, median"].append(float(median))
                    drawn[name][f"{what}, max"].append(float(worst))
    print(f"\nload average now {_load()}")
    if not arguments.skip_api:
        print(f"\np95 per call (ms): median of {arguments.runs} runs (min-max)")
        for database in ("SQLite", "PostgreSQL"):
            calls = [call for (db, call) in api["new"] if db == database]
            if not calls:
                continue
            print(f"\n{database:<58} {'old':>22} {'new':>22}")
            for call in calls:
                old, new = api["old"].get((database, call), []), api["new"][(database, call)]
                print(f"  {call:<56} {_spread(old):>22} {_spread(new):>22}")
            print(
                f"  {'slowest call of a run':<56} {_spread(slowest['old'][database]):>22} "
                f"{_spread(slowest['new'][database]):>22}"
            )
    if not arguments.skip_dashboard:
        print(f"\ndashboard in chromium (s): median of {arguments.runs} runs (min-max)")
        for what in drawn["new"]:
            print(
                f"  {what:<56} {_spread(drawn['old'][what], 2):>22} "
                f"{_spread(drawn['new'][what], 2):>22}"
            )


if __name__ == "__main__":
    sys.exit(main())
