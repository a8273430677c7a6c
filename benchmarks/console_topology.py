"""Benchmark: topology uploads at and past the limits, and the office views after them.

Issue 13, row 11: a 100,000-row topology took 15.8 s and a 2,000-deep parent chain
18.3 s to process, with ``/api/v1/health`` blocked, and every office call then took
seconds. This runs an in-process console (SQLite in a temporary directory) and prints
how long each refusal takes, how long an upload of the largest accepted tree takes,
and how long the views that need the tree answer afterwards. Figures, not assertions.

    .venv/bin/python benchmarks/console_topology.py
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from shoal import topology
from shoal.console.app import create_app
from shoal.console.state import ADMIN_PASSWORD_VARIABLE, ConsoleConfig, open_console
from shoal.core.signing import SigningKey

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

T = TypeVar("T")
PASSWORD = "benchmark password"
HEADER = "office,parent,type,subnets\nCentral Office,,Default,10.0.0.0/24\n"


def wide(offices: int) -> str:
    rows = (
        f"Office {n},Central Office,Default,{11 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}.0/24"
        for n in range(offices)
    )
    return HEADER + "\n".join(rows) + "\n"


def deep(levels: int) -> str:
    rows = ["Level 1,Central Office,Default,"]
    rows += [f"Level {level},Level {level - 1},Default," for level in range(2, levels + 1)]
    return HEADER + "\n".join(rows) + "\n"


def timed(what: str, call: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = call()
    print(f"{what:<58} {time.perf_counter() - started:7.3f} s")
    return result


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-topology-"))
    vendor = work / "vendor.key.pub"
    SigningKey.generate().verify_key.save(vendor)
    os.environ[ADMIN_PASSWORD_VARIABLE] = PASSWORD
    state = open_console(ConsoleConfig(data_dir=work / "console", vendor_public_key=vendor))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(create_app(state), base_url="https://testserver")
    client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    token = client.post(
        "/api/v1/tokens", json={"name": "bench"}, headers={"Origin": "https://testserver"}
    ).json()["token"]
    client.cookies.clear()
    headers = {"Authorization": f"Bearer {token}"}
    csv_headers = {**headers, "content-type": "text/csv"}

    largest = wide(topology.MAX_OFFICES - 1)
    timed(
        f"parse {topology.MAX_OFFICES} offices (pure function)", lambda: topology.parse_csv(largest)
    )
    for label, text in (
        ("PUT 100,000 rows (refused)", wide(100_000)),
        ("PUT a 2,000-deep parent chain (refused)", deep(2_000)),
        (f"PUT {topology.MAX_OFFICES} offices (accepted)", largest),
    ):
        answer = timed(
            label,
            lambda text=text: client.put("/api/v1/topology", content=text, headers=csv_headers),
        )
        print(f"    -> {answer.status_code} {answer.text[:110]}")
    for path in ("/api/v1/offices", "/api/v1/assignments", "/api/v1/topology?format=csv"):
        timed(f"GET {path}", lambda path=path: client.get(path, headers=headers))
    client.close()
    state.close()


if __name__ == "__main__":
    main()
