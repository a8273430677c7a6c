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


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test marked ``serial`` joins the xdist group "serial": with ``-n 2 --dist
    loadgroup`` (``make test``) the group runs in one worker, one test after the other,
    as in a run without xdist. Namespaces, sites and labs then never overlap (nor change
    the host's interfaces under chromium), and what a test times is never run beside
    another such test; the other worker runs the rest meanwhile."""
    for item in items:
        if item.get_closest_marker("serial") is not None:
            item.add_marker(pytest.mark.xdist_group("serial"))


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


@pytest.fixture(autouse=True, scope="session")
def _settings_files_in_a_temporary_directory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """No test reads or writes /etc/shoal: the roles look for their settings files in a
    directory of the session's own (``SHOAL_CONFIG_DIR``, inherited by subprocesses)."""
    saved = os.environ.get("SHOAL_CONFIG_DIR")
    os.environ["SHOAL_CONFIG_DIR"] = str(tmp_path_factory.mktemp("etc-shoal"))
    yield
    if saved is None:
        del os.environ["SHOAL_CONFIG_DIR"]
    else:
        os.environ["SHOAL_CONFIG_DIR"] = saved
