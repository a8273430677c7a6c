"""The client as devices get it: the wheel without extras, and the unpacked Debian
package, each run against a lab site (console and P2P server from this checkout).

``packaging/build.py`` builds the wheel and the three Debian packages (checking their
units with ``systemd-analyze verify``); a fresh virtual environment installs the wheel
without extras from the machine's local package index (offline). Needs root for the
lab's network namespaces, and the local index; skipped otherwise. Every namespace,
process and file is removed at the end, also on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_site import one_office_site
from shoal_dev.lab.deployment import Deployment
from shoal_dev.lab.netns import lab_available
from shoal_dev.lab.network import EmulatedNetwork, LabOffice

REPO = Path(__file__).resolve().parent.parent
LOCAL_INDEX = Path("/opt/pypi/simple")
PREFIX = "pkg-"
BASE = "10.237"
MAX_CLIENT_DISTRIBUTIONS = 10  # issue 11's target (29 before the extras)
SERVER_OR_CONSOLE = {"fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "httpx"}

lab_ok, lab_why = lab_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not LOCAL_INDEX.is_dir(), reason=f"no local package index {LOCAL_INDEX}"),
]


def build(*arguments: str) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "packaging" / "build.py"), *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist`` of the client into a temporary directory (wheels, its .deb, its
    staged tree); the server's and console's packages take minutes more to gather their
    dependencies, so this suite verifies their units only (``make dist`` builds all)."""
    out = tmp_path_factory.mktemp("dist")
    build("--out", str(out), "--roles", "client")
    return out


@pytest.fixture(scope="module")
def client_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with ``pip install shoal`` (the wheel, no extras).

    Created without pip of its own (ensurepip takes seconds): this environment's pip
    installs into it (``pip --python``), with the same resolver."""
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    (wheel,) = dist.glob("shoal-*-py3-none-any.whl")
    install = subprocess.run(
        [
            *pip_in(venv, "install", "--quiet"),
            *("--index-url", LOCAL_INDEX.as_uri(), str(wheel)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    return venv


def pip_in(venv: Path, *arguments: str) -> list[str]:
    """The command line of this environment's pip acting on ``venv``."""
    return [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *arguments]


def installed(venv: Path) -> set[str]:
    listing = subprocess.run(
        pip_in(venv, "list", "--format", "json"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {row["name"].lower() for row in json.loads(listing)} - {"pip", "setuptools"}


def test_a_client_install_pulls_few_distributions_and_none_of_the_server_stacks(
    client_venv: Path,
) -> None:
    names = installed(client_venv)
    assert "shoal" in names
    assert len(names) <= MAX_CLIENT_DISTRIBUTIONS, sorted(names)
    assert not names & SERVER_OR_CONSOLE, sorted(names)
    assert not list((client_venv / "lib").glob("python3*/site-packages/shoal_dev"))


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["console"], "console"),
        (["server", "run", "--console", "x", "--address", "1.2.3.4"], "server"),
    ],
)
def test_a_role_without_its_extra_stops_with_one_line_naming_it(
    client_venv: Path, argv: list[str], extra: str
) -> None:
    result = subprocess.run(
        [str(client_venv / "bin" / "shoal"), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"pip install 'shoal[{extra}]'" in result.stderr


def test_the_units_of_all_three_roles_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    build("--out", str(tmp_path), "--units-only")
    for role in ("client", "server", "console"):
        unit = (tmp_path / "stage-units" / "verify" / f"shoal-{role}.service").read_text()
        for line in (
            "User=shoal",
            "ProtectSystem=strict",
            f"StateDirectory=shoal/{role}",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=\n",
        ):
            assert line in unit, f"shoal-{role}.service lacks {line!r}"


def test_the_client_package_holds_its_unit_config_and_launcher(dist: Path) -> None:
    for role in ("client",):
        (package,) = dist.glob(f"shoal-{role}_*.deb")
        listing = subprocess.run(
            ["dpkg-deb", "--contents", str(package)], capture_output=True, text=True, check=True
        ).stdout
        for path in (
            f"./lib/systemd/system/shoal-{role}.service",
            f"./etc/shoal/{role}.toml",
            f"./usr/bin/shoal-{role} -> /opt/shoal/{role}/bin/shoal",
            f"./opt/shoal/{role}/lib/shoal/cli.py",
            # Compiled at build time: a service's read-only copy is not compiled at start.
            f"./opt/shoal/{role}/lib/shoal/__pycache__/cli.cpython-311.pyc",
        ):
            assert path in listing, f"{package.name} lacks {path}"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Deployment, EmulatedNetwork]]:
    if not lab_ok:
        pytest.skip(lab_why)
    branch = LabOffice("branch", 1, 2, wan_mbit=100, base=BASE)
    with one_office_site(PREFIX, BASE, branch, tmp_path, seats=10) as running:
        yield running


def test_the_pip_installed_and_the_unpacked_debian_client_fetch_a_package_from_a_site(
    site: tuple[Deployment, EmulatedNetwork], client_venv: Path, dist: Path, tmp_path: Path
) -> None:
    deployment, network = site
    package = tmp_path / "SampleApp.msi"
    package.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    content_id = deployment.upload_and_assign(package)["content_id"]
    from_pip, from_deb = network.office_hosts("branch")
    deployment.client_command = (str(client_venv / "bin" / "shoal"),)
    deployment.start_clients([from_pip])
    launcher = dist / "stage" / "shoal-client" / "opt" / "shoal" / "client" / "bin" / "shoal"
    deployment.client_command = (str(launcher),)
    deployment.start_clients([from_deb])
    statuses = deployment.wait_for_clients(content_id, timeout=120)
    assert set(statuses) == {from_pip.name, from_deb.name}
    for host in (from_pip, from_deb):
        cached = deployment.cached_file(host, content_id).read_bytes()
        assert hashlib.sha256(cached).hexdigest() == sha, f"{host.name} holds a wrong file"
    # Each ran the installed copy, not this checkout.
    for host, where in ((from_pip, client_venv), (from_deb, launcher.parent.parent)):
        pid = deployment.processes[f"client-{host.name}"].pid
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert str(where) in maps, f"{host.name} did not run the installed copy"
