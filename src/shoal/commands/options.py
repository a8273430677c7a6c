"""Options that several commands share, each defined once: a role's data directory and
database, the log level, and the UDP ports whose default comes from elsewhere.

A role's data directory (default folder and environment variable) and its database URL
variable are facts about the role, so ``shoal server run``, ``shoal server backup`` and
``shoal doctor server`` read them from one table here; only the help text (what the
command does with the directory) is the command's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from shoal.commands.daemon import LOG_LEVELS

Role = Literal["client", "server", "console"]
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True, slots=True)
class RoleStorage:
    """Where a role keeps its state unless told otherwise."""

    data_dir: Path
    data_dir_envvar: str
    database_url_envvar: str | None


STORAGE: dict[Role, RoleStorage] = {
    "client": RoleStorage(Path("client-data"), "SHOAL_CLIENT_DATA_DIR", None),
    "server": RoleStorage(
        Path("server-data"), "SHOAL_SERVER_DATA_DIR", "SHOAL_SERVER_DATABASE_URL"
    ),
    "console": RoleStorage(Path("console-data"), "SHOAL_CONSOLE_DATA_DIR", "SHOAL_DATABASE_URL"),
}


def data_dir_option(role: Role, help: str | None = None) -> Decorator:
    """``--data-dir`` of ``role``: its default folder and environment variable."""
    storage = STORAGE[role]
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=storage.data_dir,
        show_default=True,
        envvar=storage.data_dir_envvar,
        help=help,
    )


def database_url_option(role: Role, help: str | None = None) -> Decorator:
    """``--database-url`` of ``role`` (the console or a P2P server) and its variable."""
    envvar = STORAGE[role].database_url_envvar
    if envvar is None:
        raise ValueError(f"the {role} has no database")
    return click.option("--database-url", envvar=envvar, help=help)


LOG_LEVEL = click.option(
    "--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True
)


def port_option(name: str, default_from: str, fallback: int) -> Decorator:
    """A UDP port option without a default of its own: ``default_from`` (the console's
    setting, the enrollment's) decides, else ``fallback``; the help says so."""
    return click.option(name, type=int, help=f"Default: {default_from}, else {fallback}.")
