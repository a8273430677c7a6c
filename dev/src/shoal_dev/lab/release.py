"""Client releases for the lab: wheels of this tree at any version, and installed copies.

``build_release`` builds a ``shoal`` wheel of the working tree with ``__version__`` set
to the version asked for (pip with hatchling, no isolated build environment: nothing is
fetched). ``install_copy`` lays a wheel out as the Debian package does
(``ROOT/lib/shoal`` + ``ROOT/lib/shoal-VERSION.dist-info`` and the launcher
``ROOT/bin/shoal`` that runs this interpreter on ``ROOT/lib``; packaging/build.py): a
client installed like this is what a release's install action replaces. The
dependencies come from this interpreter's environment, as Debian's python3 brings them
to the package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from shoal.core.errors import ShoalError

REPO = Path(__file__).resolve().parents[4]
LAUNCHER = """#!/bin/sh
# shoal from its own copy in ../lib (as the Debian package's launcher)
here=$(dirname "$(readlink -f "$0")")
exec {python} -I -c 'import sys
sys.path.insert(0, sys.argv.pop(1))
from shoal.cli import main
main()' "$here/../lib" "$@"
"""


class ReleaseBuildError(ShoalError):
    """A wheel could not be built."""


def build_release(version: str, out: Path) -> Path:
    """A wheel of this tree's ``shoal`` at ``version``, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shoal-release-") as temporary:
        tree = Path(temporary)
        shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
        shutil.copy(REPO / "README.md", tree / "README.md")
        shutil.copytree(
            REPO / "src" / "shoal",
            tree / "src" / "shoal",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        init = tree / "src" / "shoal" / "__init__.py"
        text, count = re.subn(
            r'^__version__ = ".*"$', f'__version__ = "{version}"', init.read_text(), flags=re.M
        )
        if count != 1:
            raise ReleaseBuildError(f"no __version__ line in {init}")
        init.write_text(text)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
                *("--quiet", "--wheel-dir", str(out), str(tree)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ReleaseBuildError(f"pip wheel failed: {result.stderr[-2000:]}")
    wheel = out / f"shoal-{version}-py3-none-any.whl"
    if not wheel.exists():
        raise ReleaseBuildError(f"no {wheel.name} in {out}")
    return wheel


def install_copy(wheel: Path, root: Path) -> Path:
    """Unpack ``wheel``'s ``shoal`` package into ``root/lib``; return the launcher."""
    lib = root / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.split("/", 1)[0] == "shoal" or ".dist-info/" in member:
                archive.extract(member, lib)
    launcher = root / "bin" / "shoal"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    return launcher
