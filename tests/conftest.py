"""Shared fixtures for the shoal test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from postgres import ThrowawayPostgres, find_binaries

settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL cluster for the session (stopped even on failure)."""
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (as root, make test installs it)")
    cluster = ThrowawayPostgres(binaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data dir, the default) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    cluster: ThrowawayPostgres = request.getfixturevalue("postgres")
    return cluster.new_database()
