"""Benchmark: every API call the console's web UI makes, on a large site, SQLite and PostgreSQL.

Issue 14, point 5: with 10,000 devices in 500 offices and 200 applications
(``benchmarks/console_fixture.py``), every call the UI makes should answer in p95
<= 200 ms. This fills a console on SQLite (a temporary directory) and, when
PostgreSQL's binaries are installed (``.ci/ensure-postgres.sh``), on a throwaway
PostgreSQL cluster (``tests/postgres.py``), then times each call in process (the
FastAPI application through its test client: no network, no TLS) and prints p50 and
p95 per call. Figures, not assertions.

    .venv/bin/python benchmarks/console_api.py [--rounds 30] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/postgres.py
sys.path.insert(0, str(Path(__file__).resolve().parent))

from console_fixture import DEFAULT_PASSWORD, open_fixture

from shoal.console import app as console_app
from shoal.console.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

UI_CALLS = (
    # The dashboard: polled every few seconds, and what it draws.
    "/api/v1/summary",
    "/api/v1/reports/wan?period=hour",
    "/api/v1/reports/wan?period=day",
    "/api/v1/reports/wan?period=30d",
    "/api/v1/assignments?limit=10",
    "/api/v1/servers?limit=50",
    "/api/v1/servers/auth-key",
    "/api/v1/console-key",
    "/api/v1/banned-peers?limit=20",
    # The assign form's choices, and the office tree's first two levels.
    "/api/v1/versions?limit=1000",
    "/api/v1/offices?limit=1000",
    # Lists, first and a late page; searches and filters.
    "/api/v1/applications?limit=50",
    "/api/v1/applications?limit=50&offset=150",
    "/api/v1/versions?limit=25&search=Application%2019",
    "/api/v1/devices?limit=50",
    "/api/v1/devices?limit=50&offset=9950",
    "/api/v1/devices?limit=50&search=pc-0123",
    "/api/v1/devices?limit=50&office=Branch%20123",
    "/api/v1/devices?limit=50&status=offline&version=0.0.9",
    "/api/v1/assignments?limit=50",
    "/api/v1/assignments?limit=50&offset=100",
    "/api/v1/assignments/1",
    # Install results under the assignments: failed only (the UI's default), then all.
    "/api/v1/installs?limit=50&state=failed",
    "/api/v1/installs?limit=50",
    "/api/v1/offices?parent=",
    "/api/v1/offices?parent=Region%2007&limit=50",
    "/api/v1/offices?search=Branch%2012",
    # The office view.
    "/api/v1/offices/Branch%20123",
    "/api/v1/offices/Central%20Office",
    "/api/v1/reports/downloads?limit=50",
    "/api/v1/reports/downloads?limit=50&office=Branch%20123",
    "/api/v1/license",
    "/api/v1/settings/p2p",
    "/api/v1/admins?limit=1000",
    "/api/v1/tokens?limit=1000",
    "/api/v1/auth/me",
)


def measure(name: str, client: TestClient, rounds: int) -> None:
    print(f"\n{name}: p50 / p95 over {rounds} calls (ms)")
    worst = 0.0
    for path in UI_CALLS:
        client.get(path).raise_for_status()  # warm the caches as a polling UI does
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            answer = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
        p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
        worst = max(worst, p95)
        print(f"  {path:<58} {statistics.median(times):7.1f} {p95:7.1f}")
    print(f"  {'slowest p95':<58} {'':7} {worst:7.1f}")


def run(name: str, work: Path, database_url: str | None, rounds: int) -> None:
    started = time.perf_counter()
    state = open_fixture(work, database_url)
    print(f"{name}: fixture filled in {time.perf_counter() - started:.1f} s")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = TestClient(create_app(state), base_url="http://testserver")
        # As `shoal console` does once started (older checkouts lack it: not called).
        freeze = getattr(console_app, "freeze_startup_objects", None)
        if freeze is not None:
            freeze()
        login = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": DEFAULT_PASSWORD}
        )
        login.raise_for_status()
        token = client.post(
            "/api/v1/tokens", json={"name": "bench"}, headers={"Origin": "http://testserver"}
        ).json()["token"]
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {token}"
        measure(name, client, rounds)
        client.close()
    finally:
        state.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sqlite-only", action="store_true")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-console-") as work:
        run("SQLite", Path(work) / "sqlite", None, arguments.rounds)
        if arguments.sqlite_only:
            return
        from tests.postgres import ThrowawayPostgres, find_binaries

        binaries = find_binaries()
        if binaries is None:
            print("\nPostgreSQL: skipped (no initdb: run .ci/ensure-postgres.sh)")
            return
        cluster = ThrowawayPostgres(binaries)
        try:
            cluster.start()
            run("PostgreSQL", Path(work) / "postgresql", cluster.new_database(), arguments.rounds)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
