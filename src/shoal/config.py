"""Configuration files of the three roles: ``/etc/shoal/{client,server,console}.toml``.

Theory of operation
-------------------
Each role's ``run`` command reads one TOML file whose keys are the names of its
command-line options (``--data-port`` -> ``data_port``); ``docs/deploy.md`` lists them
all. The precedence is **flags > environment > file > built-in default**: the file's
values become the command's defaults (click's ``default_map``), which a variable of
the environment or a flag then overrides. The file is found at
``--config PATH``, else ``$SHOAL_<ROLE>_CONFIG``, else ``<dir>/<role>.toml`` where
``<dir>`` is ``$SHOAL_CONFIG_DIR`` or ``/etc/shoal`` (absent there = no file; absent
when named explicitly = an error).

Secrets are never values of this file nor required on a command line: the file names
the file that holds them (``server_key_file``; the client's enrollment token lives in
its data directory, written by ``shoal client enroll``).

The loader is the standard library's ``tomllib`` and nothing else: the client must
install in at most 10 distributions, and pydantic-settings would bring six
(pydantic, pydantic-core, annotated-types, typing-extensions, typing-inspection,
python-dotenv) to a device that needs none of them; one loader serves all three roles.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from shoal.core.errors import ShoalError
from shoal.core.files import write_durably

ROLES = ("client", "server", "console")
CONFIG_DIR = Path("/etc/shoal")
CONFIG_DIR_VARIABLE = "SHOAL_CONFIG_DIR"
"""Replaces ``/etc/shoal`` for every role (a test, an unprivileged user)."""


class ConfigError(ShoalError):
    """A configuration file is unreadable, not TOML, or holds an unknown key."""


def config_variable(role: str) -> str:
    """The environment variable that names ``role``'s configuration file."""
    return f"SHOAL_{role.upper()}_CONFIG"


def default_path(role: str, environ: Mapping[str, str] = os.environ) -> tuple[Path, bool]:
    """Where ``role``'s file is, and whether it was named (then it must exist)."""
    named = environ.get(config_variable(role))
    if named:
        return Path(named), True
    return Path(environ.get(CONFIG_DIR_VARIABLE) or CONFIG_DIR) / f"{role}.toml", False


def load(path: Path, known: Collection[str], *, required: bool) -> dict[str, Any]:
    """The settings of ``path``: a flat TOML table of the keys in ``known``.

    A missing file gives ``{}`` unless ``required``; anything else wrong is a
    ``ConfigError`` naming the file and the key.
    """
    try:
        with path.open("rb") as source:
            document = tomllib.load(source)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such configuration file") from None
        return {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not TOML ({error})") from None
    for key, value in document.items():
        if key not in known:
            close = sorted(name for name in known if name.split("_")[0] == key.split("_")[0])
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{path}: unknown setting {key!r}{hint}")
        if isinstance(value, dict):
            raise ConfigError(f"{path}: {key!r} must be a value, not a table")
    return document


def read_secret(path: Path, what: str) -> str:
    """The secret held in ``path`` (stripped), refused when others may read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what} ({error.strerror})") from None
    if os.name == "posix" and mode & 0o007:
        raise ConfigError(f"{path}: the {what} is readable by every user (chmod o-rwx)")
    if not text:
        raise ConfigError(f"{path}: the {what} file is empty")
    return text


def render(settings: Mapping[str, Any]) -> str:
    """``settings`` as TOML (strings, numbers, booleans, lists of strings)."""
    lines = []
    for key, value in settings.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_settings(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` durably, readable by all (it holds no secret: the
    service's own user reads it)."""
    write_durably(path, text.encode(), mode=0o644)
