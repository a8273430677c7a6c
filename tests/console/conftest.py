"""Fixtures for the console tests: a console on SQLite and on PostgreSQL, a fake clock."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from shoal import __version__
from shoal.console.app import create_app
from shoal.console.state import ADMIN_PASSWORD_VARIABLE, ConsoleConfig, ConsoleState, open_console

from .vendor import licence_key, vendor_public_key_file

ADMIN_PASSWORD = "a long test password"


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))


@dataclass
class Harness:
    """A console with a logged-in API client."""

    state: ConsoleState
    client: TestClient
    clock: FakeClock
    headers: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, headers=self.headers, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.put(path, headers=headers, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.client.patch(path, headers=self.headers, **kwargs)

    def delete(self, path: str) -> Any:
        return self.client.delete(path, headers=self.headers)

    def upload(self, name: str, version: str, data: bytes, **params: Any) -> Any:
        return self.client.post(
            "/api/v1/applications",
            params={"name": name, "version": version, **params},
            content=data,
            headers={**self.headers, "content-type": "application/octet-stream"},
        )

    def save_licence(self, seats: int, expires: date, customer: str = "Acme") -> Any:
        key = licence_key(seats, expires, self.clock().date(), customer)
        return self.put("/api/v1/license", json={"key": key})

    def link_headers(self, server_id: str = "srv-1", version: str = __version__) -> dict[str, str]:
        return {
            "X-Shoal-Server-Key": self.state.server_key,
            "X-Shoal-Server-Id": server_id,
            "X-Shoal-Version": version,
        }

    def set_topology(self, csv_text: str) -> Any:
        return self.put("/api/v1/topology", content=csv_text, headers={"content-type": "text/csv"})


def make_harness(
    data_dir: Path, database_url: str | None, clock: FakeClock, **config: Any
) -> Harness:
    config.setdefault("vendor_public_key", vendor_public_key_file(data_dir.parent))
    state = open_console(
        ConsoleConfig(data_dir=data_dir, database_url=database_url, **config), clock
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(create_app(state), base_url="https://testserver")
    harness = Harness(state, client, clock)
    login = client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert login.status_code == 200, login.text
    # A write with the session cookie must say it comes from the console's own origin.
    token = client.post(
        "/api/v1/tokens", json={"name": "tests"}, headers={"Origin": "https://testserver"}
    ).json()["token"]
    client.cookies.clear()
    harness.headers = {"Authorization": f"Bearer {token}"}
    return harness


@pytest.fixture
def console(
    tmp_path: Path,
    database_url: str | None,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Harness]:
    """A console (SQLite and PostgreSQL) with an admin API token in ``headers``."""
    monkeypatch.setenv(ADMIN_PASSWORD_VARIABLE, ADMIN_PASSWORD)
    harness = make_harness(tmp_path / "console", database_url, clock)
    try:
        yield harness
    finally:
        harness.client.close()
        harness.state.close()


CSV_TOPOLOGY = """office,parent,type,subnets
Central Office,,Default,10.0.0.0/24
Paris,Central Office,Default,10.1.0.0/24
Paris WiFi,Paris,WiFi,10.1.1.0/24
Remote,Central Office,VPN,10.9.0.0/16
"""
