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
    """xdist groups (``make test`` runs ``-n 2 --dist loadgroup``; a group runs in one
    worker, its tests one after the other in their usual order):

    - every test marked ``serial`` joins the group "serial", run as without xdist:
      namespaces, sites and labs never overlap (nor change the host's interfaces under
      chromium), and what a test times never runs beside another such test, while the
      other worker runs the rest;
    - a test that uses a module-scoped fixture joins its module's group, so that the
      fixture (a built wheel, a simulated grid, a console process) is set up once, not
      once in each worker.
    """
    for item in items:
        if item.get_closest_marker("serial") is not None:
            item.add_marker(pytest.mark.xdist_group("serial"))
        elif isinstance(item, pytest.Function) and any(
            definition.scope == "module"
            for definitions in item._fixtureinfo.name2fixturedefs.values()
            for definition in definitions
        ):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under ``--dist loadgroup``, stop unless xdist has tagged each grouped test's ID
    with its group (``ID@GROUP``, what its scheduler groups by): a pytest or xdist
    release that loses the tag (pytest-xdist#1386) would otherwise spread the serial
    tests over both workers without a word."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        groups = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if groups and not item.nodeid.endswith("@" + "_".join(sorted(groups))):
            raise pytest.UsageError(
                f"xdist did not group {item.nodeid} ({sorted(groups)}): "
                "check the pytest and pytest-xdist versions (pyproject.toml)"
            )


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
