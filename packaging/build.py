"""``make dist``: the wheels, and a Debian package each for client, server and console.

Theory of operation
-------------------
1. ``pip wheel`` builds ``shoal`` (and ``shoal-dev``) into ``OUT/`` (hatchling, no
   isolated build environment, so nothing is fetched for the build itself).
2. Per role, a staged tree ``OUT/stage/shoal-ROLE/``:

   - ``opt/shoal/ROLE/lib/``: shoal with the role's extra and its dependencies,
     ``pip install --target`` from the package index pip uses here (a local one when
     ``/opt/pypi/simple`` exists: offline);
   - ``opt/shoal/ROLE/bin/shoal``: a launcher that runs Debian's ``python3 -I`` on that
     copy (no virtual environment, so the unpacked tree runs where it lies);
   - ``usr/bin/shoal-ROLE`` -> the launcher; ``etc/shoal/ROLE.toml`` (a conffile);
     ``lib/systemd/system/shoal-ROLE.service`` with ``systemd/hardening.conf``;
     ``usr/share/doc/shoal-ROLE/deploy.md``; ``DEBIAN/`` control files and scripts
     (``postinst`` creates the ``shoal`` system user).
3. ``systemd-analyze verify --root`` checks each unit (Debian's ``systemd`` is installed
   first when missing, as root); ``dpkg-deb --root-owner-group --build`` makes the
   ``.deb``. Only Debian's own tools: no debhelper, no fpm.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ROLES = ("client", "server", "console")
LOCAL_INDEX = Path("/opt/pypi/simple")
EXTRA = {"client": "", "server": "[server]", "console": "[console]"}
SUMMARY = {
    "client": "peer-to-peer software distribution: the agent on every device",
    "server": "peer-to-peer software distribution: the P2P server of a central office",
    "console": "peer-to-peer software distribution: the management console",
}
LAUNCHER = """#!/bin/sh
# shoal-{role}: shoal from its own copy in ../lib, on Debian's python3, isolated (-I)
# from the environment's PYTHONPATH and the user's site-packages.
here=$(dirname "$(readlink -f "$0")")
# glibc keeps freed heap memory (a chunk's buffers) resident unless told to give it back
# early: about 5 MB less RSS for an idle client (benchmarks/idle_client_rss.py).
export MALLOC_TRIM_THRESHOLD_="${{MALLOC_TRIM_THRESHOLD_:-65536}}"
export MALLOC_MMAP_THRESHOLD_="${{MALLOC_MMAP_THRESHOLD_:-65536}}"
exec "${{SHOAL_PYTHON:-/usr/bin/python3}}" -I -c 'import sys
sys.path.insert(0, sys.argv.pop(1))
sys.argv[0] = "shoal-{role}"
from shoal.cli import main
main()' "$here/../lib" "$@"
"""
POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd shoal >/dev/null; then
        adduser --system --group --home /var/lib/shoal --no-create-home \\
            --gecos "shoal services" shoal >/dev/null
    fi
    if [ -d /opt/shoal/client/lib ]; then
        # A client release's install action replaces this copy (docs/operations.md).
        chown -R shoal:shoal /opt/shoal/client/lib
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
"""
PRERM = """#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop shoal-{role}.service || true
fi
"""
POSTRM = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
"""


class DistError(Exception):
    """A step of the build failed; the message says which and why."""


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise DistError(f"{' '.join(argv[:4])}... failed:\n{result.stdout}{result.stderr}")
    return result  # type: ignore[no-any-return]


def version() -> str:
    text = (REPO / "src" / "shoal" / "__init__.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    if match is None:
        raise DistError("no __version__ in src/shoal/__init__.py")
    return match.group(1)


def index_arguments() -> list[str]:
    """Install from the local package index when the machine has one (offline)."""
    url = os.environ.get("SHOAL_DIST_INDEX_URL")
    if url:
        return ["--index-url", url]
    if LOCAL_INDEX.is_dir():
        return ["--index-url", LOCAL_INDEX.as_uri()]
    return []


def build_wheels(out: Path) -> Path:
    """Build shoal's and shoal-dev's wheels into ``out``; return shoal's."""
    out.mkdir(parents=True, exist_ok=True)
    for project in (REPO, REPO / "dev"):
        run(
            [
                *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
                *("--quiet", "--wheel-dir", str(out), str(project)),
            ]
        )
    wheels = sorted(out.glob(f"shoal-{version()}-*.whl"))
    if not wheels:
        raise DistError(f"no shoal wheel in {out}")
    return wheels[-1]


def ensure_systemd_analyze() -> str:
    """The path of ``systemd-analyze``, installing Debian's systemd when missing."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise DistError("systemd-analyze is missing: install Debian's systemd package")
    run(["apt-get", "update", "-qq"])
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"])
    found = shutil.which("systemd-analyze")
    if not found:
        raise DistError("systemd-analyze is still missing after installing systemd")
    return found


def unit_text(role: str) -> str:
    hardening = (HERE / "systemd" / "hardening.conf").read_text().strip()
    return (
        (HERE / "systemd" / f"shoal-{role}.service").read_text().replace("@HARDENING@", hardening)
    )


def _install(role: str, wheel: Path, lib: Path) -> None:
    """shoal with the role's extra and its dependencies into ``lib``."""
    run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"),
            *("--target", str(lib), "--no-warn-script-location", *index_arguments()),
            f"{wheel}{EXTRA[role]}",
        ]
    )
    shutil.rmtree(lib / "bin", ignore_errors=True)  # scripts with this build's shebang
    # Bytecode in the package: the server's and console's copies are read-only to their
    # services (ProtectSystem=strict), so without it every start compiles every module
    # from source (~0.8 CPU s), and a client's first start does. dpkg keeps the sources'
    # times, so the bytecode stays valid; the Depends pins the same minor Python.
    run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(lib)])


def stage(role: str, wheel: Path | None, root: Path) -> Path:
    """The staged file tree of ``shoal-ROLE`` under ``root`` (without ``wheel``: all but
    the Python code, enough to verify the unit)."""
    if root.exists():
        shutil.rmtree(root)
    home = root / "opt" / "shoal" / role
    lib = home / "lib"
    lib.mkdir(parents=True)
    if wheel is not None:
        _install(role, wheel, lib)
    (home / "bin").mkdir(parents=True)
    launcher = home / "bin" / "shoal"
    launcher.write_text(LAUNCHER.format(role=role))
    launcher.chmod(0o755)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / f"shoal-{role}").symlink_to(f"/opt/shoal/{role}/bin/shoal")
    (root / "etc" / "shoal").mkdir(parents=True)
    shutil.copy(HERE / "etc" / f"{role}.toml", root / "etc" / "shoal" / f"{role}.toml")
    units = root / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    (units / f"shoal-{role}.service").write_text(unit_text(role))
    doc = root / "usr" / "share" / "doc" / f"shoal-{role}"
    doc.mkdir(parents=True)
    shutil.copy(REPO / "docs" / "deploy.md", doc / "deploy.md")
    return root


def control(role: str, root: Path) -> None:
    """``DEBIAN/``: control, conffiles and the maintainer scripts."""
    architecture = run(["dpkg", "--print-architecture"]).stdout.strip()
    size_kib = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) // 1024
    debian = root / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(
        f"Package: shoal-{role}\n"
        f"Version: {version()}\n"
        f"Architecture: {architecture}\n"
        "Maintainer: shoal maintainers <shoal@localhost>\n"
        f"Installed-Size: {size_kib}\n"
        # The bundled binary wheels (cryptography, cffi) are built for CPython 3.11.
        "Depends: python3 (>= 3.11), python3 (<< 3.12), adduser\n"
        "Section: net\n"
        "Priority: optional\n"
        f"Description: {SUMMARY[role]}\n"
        " shoal moves each package across an office's WAN link once; the devices of\n"
        " the office fetch it from each other over UDP. See deploy.md.\n"
    )
    (debian / "conffiles").write_text(f"/etc/shoal/{role}.toml\n")
    for name, text in (("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)):
        script = debian / name
        script.write_text(text.format(role=role) if "{role}" in text else text)
        script.chmod(0o755)


def verify_unit(role: str, root: Path) -> None:
    """``systemd-analyze verify`` of the staged unit. Its ``ExecStart`` names
    ``/usr/bin/shoal-ROLE``, which is not on this host: the copy verified names the
    staged launcher instead (``--root`` would need a whole system under ``root``)."""
    analyze = ensure_systemd_analyze()
    text = (root / "lib" / "systemd" / "system" / f"shoal-{role}.service").read_text()
    launcher = root / "opt" / "shoal" / role / "bin" / "shoal"
    checked = root.parent / "verify" / f"shoal-{role}.service"
    checked.parent.mkdir(parents=True, exist_ok=True)
    checked.write_text(text.replace(f"/usr/bin/shoal-{role}", str(launcher)))
    result = subprocess.run(
        [analyze, "verify", str(checked)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or result.stderr.strip():
        raise DistError(f"systemd-analyze verify shoal-{role}.service:\n{result.stderr}")


def build(out: Path, roles: list[str]) -> list[Path]:
    """Wheels, then per role: stage, verify the unit, package. Returns what was made."""
    wheel = build_wheels(out)
    architecture = run(["dpkg", "--print-architecture"]).stdout.strip()
    made = [wheel]
    for role in roles:
        root = stage(role, wheel, out / "stage" / f"shoal-{role}")
        verify_unit(role, root)
        control(role, root)
        package = out / f"shoal-{role}_{version()}_{architecture}.deb"
        run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(package)])
        made.append(package)
    return made


def verify_units(out: Path, roles: list[str]) -> None:
    """Only ``systemd-analyze verify`` of each role's unit, on a tree without Python code."""
    for role in roles:
        verify_unit(role, stage(role, None, out / "stage-units" / f"shoal-{role}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--roles", default=",".join(ROLES), help="comma-separated subset")
    parser.add_argument(
        "--units-only", action="store_true", help="only verify the roles' systemd units"
    )
    arguments = parser.parse_args()
    roles = [role for role in arguments.roles.split(",") if role]
    unknown = set(roles) - set(ROLES)
    if unknown:
        parser.error(f"unknown roles: {', '.join(sorted(unknown))}")
    try:
        if arguments.units_only:
            verify_units(arguments.out.resolve(), roles)
            print(f"systemd-analyze verify: {', '.join(roles)} units are clean")
            return
        for path in build(arguments.out.resolve(), roles):
            print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
    except DistError as error:
        print(f"make dist: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
