"""An application version's install specification: what a client runs once it holds it.

Theory of operation
-------------------
The console stores an optional install specification on each application version and
writes it, as the ``install`` field of each assignment entry, into the assignment
document it signs (``shoal.assignments``). A client therefore runs only a command that
the console's Ed25519 signature covers: the P2P server relays the document unchanged,
and a peer or a LAN attacker cannot add, change or replace a specification without
breaking the signature. The specification names no application (the peer-to-peer
network still sees only content IDs, sizes and hashes).

Fields (JSON, as signed)::

    {"command": "dpkg -i {file}",        # required; names the staged file as {file}
     "extension": ".deb",                # the staged file's extension ("" = none)
     "success_codes": [0],               # exit codes that mean installed
     "reboot_codes": [3010],             # installed, but the device must reboot
     "timeout_seconds": 3600,            # the command's process tree is killed after it
     "detect": "test -e /opt/x/ok",      # optional: exit code 0 = already installed
     "uninstall": "dpkg -r x"}           # optional: run when the assignment is removed

A command is split like a POSIX shell line (``shlex.split``) and run without a shell;
each ``{file}`` in an argument becomes the staged file's path (the client names that
file itself: content ID + extension, in its own staging directory, so the path needs no
quoting). A command that needs a shell says so: ``sh -c 'tar -xzf {file} -C /opt/x'``.

``read_install_spec`` is the one validation, used by the console's API (before the
specification is stored) and by the client (on a document whose signature verified: a
console bug must not make a client run a malformed specification either).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from shoal.core.errors import ShoalError

PLACEHOLDER = "{file}"
MAX_COMMAND = 2048
MAX_CODES = 16
MAX_TIMEOUT_SECONDS = 24 * 3600
DEFAULT_TIMEOUT_SECONDS = 3600
DEFAULT_SUCCESS_CODES = (0,)
DEFAULT_REBOOT_CODES = (3010,)
_EXTENSION = re.compile(r"^(\.[A-Za-z0-9_-]{1,16}){0,3}$")
_FIELDS = frozenset(
    {"command", "extension", "success_codes", "reboot_codes", "timeout_seconds", "detect"}
    | {"uninstall"}
)


class InstallSpecInvalid(ShoalError):
    """An install specification that cannot be run as written (field and reason)."""


@dataclass(frozen=True, slots=True)
class InstallSpec:
    """A validated install specification (see the module docstring)."""

    command: str
    extension: str = ""
    success_codes: tuple[int, ...] = DEFAULT_SUCCESS_CODES
    reboot_codes: tuple[int, ...] = DEFAULT_REBOOT_CODES
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    detect: str | None = None
    uninstall: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The form the console stores and signs (every field, defaults included)."""
        return {
            "command": self.command,
            "extension": self.extension,
            "success_codes": list(self.success_codes),
            "reboot_codes": list(self.reboot_codes),
            "timeout_seconds": self.timeout_seconds,
            "detect": self.detect,
            "uninstall": self.uninstall,
        }


def command_argv(template: str, staged_file: str) -> list[str]:
    """The argument vector of ``template`` with ``{file}`` replaced by ``staged_file``."""
    return [argument.replace(PLACEHOLDER, staged_file) for argument in shlex.split(template)]


def _command(field: str, value: Any, *, needs_file: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InstallSpecInvalid(f"{field}: a non-empty command is required")
    if len(value) > MAX_COMMAND:
        raise InstallSpecInvalid(f"{field}: longer than {MAX_COMMAND} characters")
    if "\x00" in value:
        raise InstallSpecInvalid(f"{field}: contains a NUL character")
    try:
        shlex.split(value)
    except ValueError as error:
        raise InstallSpecInvalid(f"{field}: cannot be split into arguments ({error})") from None
    if needs_file and PLACEHOLDER not in value:
        raise InstallSpecInvalid(f"{field}: must name the staged file as {PLACEHOLDER}")
    return value


def _codes(field: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_CODES:
        raise InstallSpecInvalid(f"{field}: a list of at most {MAX_CODES} exit codes")
    for code in value:
        if not isinstance(code, int) or isinstance(code, bool) or not -(2**31) <= code < 2**32:
            raise InstallSpecInvalid(f"{field}: {code!r} is not an exit code")
    return tuple(value)


def read_install_spec(raw: Any) -> InstallSpec:
    """Validate a specification (a JSON object); raises ``InstallSpecInvalid``."""
    if not isinstance(raw, dict):
        raise InstallSpecInvalid("install specification: not an object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise InstallSpecInvalid(f"{unknown[0]}: not a field of an install specification")
    command = _command("command", raw.get("command"), needs_file=True)
    extension = raw.get("extension", "")
    if not isinstance(extension, str) or not _EXTENSION.fullmatch(extension):
        raise InstallSpecInvalid(
            "extension: up to three parts like .deb or .tar.gz (letters, digits, _ and -)"
        )
    success = _codes("success_codes", raw.get("success_codes", list(DEFAULT_SUCCESS_CODES)))
    reboot = _codes("reboot_codes", raw.get("reboot_codes", list(DEFAULT_REBOOT_CODES)))
    if not success:
        raise InstallSpecInvalid("success_codes: at least one exit code")
    if set(success) & set(reboot):
        raise InstallSpecInvalid("reboot_codes: a code cannot also be a plain success code")
    timeout = raw.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if (
        not isinstance(timeout, int)
        or isinstance(timeout, bool)
        or not 1 <= timeout <= MAX_TIMEOUT_SECONDS
    ):
        raise InstallSpecInvalid(f"timeout_seconds: 1 to {MAX_TIMEOUT_SECONDS}")
    detect, uninstall = raw.get("detect"), raw.get("uninstall")
    return InstallSpec(
        command=command,
        extension=extension,
        success_codes=success,
        reboot_codes=reboot,
        timeout_seconds=timeout,
        detect=None if detect is None else _command("detect", detect, needs_file=False),
        uninstall=None if uninstall is None else _command("uninstall", uninstall, needs_file=False),
    )
