"""A client release: replace this client's own program with a newer wheel, then restart.

Theory of operation
-------------------
A new client version travels as any package does: a version of the ``shoal``
application, assigned to everyone by the console (``shoal.console.services.
client_release``), fetched from peers, every chunk verified against the signed
manifest, and installed by its install specification, which the console signs inside
the assignment document. The specification the console writes for a release
(``shoal.release_policy.release_spec``) is::

    {"command": "shoal client install-release {file} --version 0.2.0",
     "extension": ".whl",
     "detect": "shoal client install-release --installed 0.2.0"}

``shoal`` as the first word of an install command is the running client's own program
(``own_program``): ``/usr/bin/shoal-client`` of the Debian package, a virtual
environment's ``shoal``, wherever it lies, so a specification needs no path.

``install_wheel`` replaces the ``shoal`` package in the directory the running client
was imported from (``/opt/shoal/client/lib`` of the Debian package; a virtual
environment's ``site-packages``): it checks the wheel (a zip, pure Python, distribution
``shoal`` at the expected version), unpacks it beside that directory, then swaps the
``shoal`` package and its ``.dist-info`` with renames (the old copy is removed after),
so a crash leaves either version whole, never a mix.

Restart: after an install command succeeded, the client compares the version on disk
(``installed_version``) with the one it runs. If they differ, it stops as on SIGTERM
(downloads, caches and install records saved) and exits with ``RESTART_EXIT_CODE``;
the service manager starts the new program (systemd: ``Restart=on-failure`` of
``shoal-client.service``, which acts on any non-zero exit). The new process reports
its version at its first check-in, and the install record of the release (saved as
installed) is reported to the console by it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import shoal
from shoal.core.errors import ShoalError

if TYPE_CHECKING:
    import zipfile

RESTART_EXIT_CODE = 75
"""EX_TEMPFAIL: "try again"; systemd's ``Restart=on-failure`` restarts on it."""
PROGRAM = "shoal"
"""An install command whose first word is this runs the client's own program."""
_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from shoal.cli import main; main()"
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_PACKAGE = "shoal"


class ReleaseInvalid(ShoalError):
    """The file is not a client release this client can install (the reason says why)."""


def library_dir() -> Path:
    """The directory the running client's ``shoal`` package was imported from."""
    return Path(shoal.__file__).resolve().parent.parent


def installed_version(lib: Path | None = None) -> str | None:
    """The ``__version__`` of the ``shoal`` package on disk now (None: unreadable)."""
    init = (lib or library_dir()) / _PACKAGE / "__init__.py"
    try:
        match = _VERSION_LINE.search(init.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def restart_needed(running: str = shoal.__version__) -> str | None:
    """The version to restart into, if an install replaced the running program."""
    on_disk = installed_version()
    return on_disk if on_disk is not None and on_disk != running else None


def own_program(argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` with a first word ``shoal`` replaced by this client's own program: this
    interpreter on the library directory the client runs from (as the Debian launcher
    does), whatever the PATH of the service holds."""
    if not argv or argv[0] != PROGRAM:
        return argv
    return (sys.executable, "-I", "-c", _BOOT, str(library_dir()), *argv[1:])


def _wheel_version(archive: zipfile.ZipFile) -> tuple[str, str]:
    """(version, dist-info directory) of a pure-Python ``shoal`` wheel."""
    infos = {name.split("/", 1)[0] for name in archive.namelist() if ".dist-info/" in name}
    if len(infos) != 1:
        raise ReleaseInvalid("not a wheel: no single .dist-info directory")
    (info,) = infos
    try:
        metadata = archive.read(f"{info}/METADATA").decode()
        wheel = archive.read(f"{info}/WHEEL").decode()
    except KeyError as error:
        raise ReleaseInvalid(f"not a wheel: {error.args[0]}") from None
    fields = dict(
        line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines() if ": " in line
    )
    if fields.get("Name", "").lower() != _PACKAGE:
        raise ReleaseInvalid(f"the wheel is {fields.get('Name')!r}, not {_PACKAGE!r}")
    if "Root-Is-Purelib: true" not in wheel:
        raise ReleaseInvalid("the wheel is not pure Python (Root-Is-Purelib is not true)")
    if f"{_PACKAGE}/__init__.py" not in archive.namelist():
        raise ReleaseInvalid("the wheel holds no shoal package")
    return fields.get("Version", ""), info


def install_wheel(wheel: Path, expected_version: str, lib: Path | None = None) -> str:
    """Replace the ``shoal`` package in ``lib`` (default: the running one's) with the
    wheel's; return the version installed. Raises ``ReleaseInvalid``."""
    # Imported here: a running client needs them only for a release (zipfile and shutil,
    # with bz2 and lzma, are ~1.4 MB of an idle client's RSS; docs/network.md).
    import shutil
    import zipfile

    lib = lib or library_dir()
    if not any(lib.glob(f"{_PACKAGE}-*.dist-info")):
        raise ReleaseInvalid(
            f"{lib} holds no installed shoal (a source checkout or an editable install): "
            "install the release with pip or the package manager"
        )
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise ReleaseInvalid(f"not a wheel: {error}") from None
    with archive:
        version, info = _wheel_version(archive)
        if version != expected_version:
            raise ReleaseInvalid(f"the wheel is version {version}, the release {expected_version}")
        unpacked = lib / f".shoal-release-{version}"  # lib alone is writable (systemd)
        shutil.rmtree(unpacked, ignore_errors=True)
        for member in archive.namelist():
            top = member.split("/", 1)[0]
            if top not in (_PACKAGE, info) or ".." in Path(member).parts:
                continue  # scripts, data: the client runs from its package alone
            archive.extract(member, unpacked)
    if installed_version(unpacked) != expected_version:
        raise ReleaseInvalid(f"the wheel's shoal/__init__.py is not version {expected_version}")
    retired = lib / f".shoal-retired-{os.getpid()}"
    shutil.rmtree(retired, ignore_errors=True)
    retired.mkdir()
    old_infos = [path for path in lib.glob(f"{_PACKAGE}-*.dist-info") if path.is_dir()]
    for old in [lib / _PACKAGE, *old_infos]:
        if old.exists():
            os.replace(old, retired / old.name)
    os.replace(unpacked / _PACKAGE, lib / _PACKAGE)
    os.replace(unpacked / info, lib / info)
    shutil.rmtree(unpacked, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)
    return version
