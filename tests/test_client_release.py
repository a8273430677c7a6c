"""A client release's install action: the client's own ``install-release`` replaces the
installed ``shoal`` with a verified wheel, and refuses anything else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from shoal import __version__
from shoal.client.self_upgrade import (
    ReleaseInvalid,
    install_wheel,
    installed_version,
    own_program,
)
from shoal.release_policy import ReleaseRefused, check_release
from shoal_dev.lab.release import build_release, install_copy


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return {version: build_release(version, out) for version in ("0.1.1", "0.2.0")}


def shoal(launcher: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(launcher), *arguments], capture_output=True, text=True, check=False, timeout=60
    )


def test_install_release_replaces_the_installed_client_with_the_wheel(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    launcher = install_copy(wheels["0.1.1"], tmp_path / "opt")
    assert shoal(launcher, "--version").stdout.strip() == "shoal, version 0.1.1"
    assert shoal(launcher, "client", "install-release", "--installed", "0.2.0").returncode == 1
    staged = tmp_path / "0123abcd.whl"  # the client stages it under its content ID
    staged.write_bytes(wheels["0.2.0"].read_bytes())
    done = shoal(launcher, "client", "install-release", str(staged), "--version", "0.2.0")
    assert done.returncode == 0, done.stderr
    assert shoal(launcher, "--version").stdout.strip() == "shoal, version 0.2.0"
    assert shoal(launcher, "client", "install-release", "--installed", "0.2.0").returncode == 0
    lib = tmp_path / "opt" / "lib"
    assert sorted(path.name for path in lib.iterdir()) == ["shoal", "shoal-0.2.0.dist-info"]
    assert [p.name for p in (tmp_path / "opt").iterdir() if p.name.startswith(".")] == []


def test_a_wheel_of_another_version_or_not_shoal_is_refused_and_nothing_changes(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    launcher = install_copy(wheels["0.1.1"], tmp_path / "opt")
    lib = tmp_path / "opt" / "lib"
    with pytest.raises(ReleaseInvalid, match=r"version 0\.2\.0, the release 0\.3\.0"):
        install_wheel(wheels["0.2.0"], "0.3.0", lib)
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("evil-1.0.dist-info/METADATA", "Name: evil\nVersion: 0.2.0\n")
        archive.writestr("evil-1.0.dist-info/WHEEL", "Root-Is-Purelib: true\n")
    with pytest.raises(ReleaseInvalid, match="'evil', not 'shoal'"):
        install_wheel(other, "0.2.0", lib)
    garbage = tmp_path / "garbage.whl"
    garbage.write_bytes(b"not a zip")
    refused = shoal(launcher, "client", "install-release", str(garbage), "--version", "0.2.0")
    assert refused.returncode == 2 and "not a wheel" in refused.stderr
    assert installed_version(lib) == "0.1.1"


def test_a_source_checkout_is_never_overwritten(wheels: dict[str, Path], tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "shoal").mkdir(parents=True)
    (source / "shoal" / "__init__.py").write_text('__version__ = "0.1.0"\n')
    with pytest.raises(ReleaseInvalid, match="no installed shoal"):
        install_wheel(wheels["0.2.0"], "0.2.0", source)
    assert installed_version(source) == "0.1.0"


def test_servers_are_upgraded_first() -> None:
    check_release("0.2.0", [("paris", "0.2.0"), ("lyon", "0.2.3")])
    check_release("0.2.5", [("paris", "0.2.0")])  # a client patch may go ahead
    with pytest.raises(ReleaseRefused, match=r"upgrade lyon \(0.1.9\) to 0.2.0 or later"):
        check_release("0.2.0", [("paris", "0.2.0"), ("lyon", "0.1.9")])
    with pytest.raises(ReleaseRefused, match=r"to 1\.0\.0 or later"):
        check_release("1.0.0", [("paris", "0.9.0")])


def test_shoal_in_an_install_command_is_the_clients_own_program() -> None:
    argv = own_program(("shoal", "--version"))
    assert argv[0] == sys.executable  # not whatever `shoal` the service's PATH finds
    ran = subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=60)
    assert ran.stdout.strip() == f"shoal, version {__version__}"
    assert own_program(("dpkg", "-i", "x.deb")) == ("dpkg", "-i", "x.deb")
