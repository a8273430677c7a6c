"""Config files and environment variables for the commands of a role (see ``shoal.config``).

``configurable(role)`` gives a click command a ``--config PATH`` option read before
every other one: the file's settings become the command's defaults, so a flag or a
variable of the environment (``SHOAL_<ROLE>_<SETTING>``, added to every option that
has none) still wins. The keys a role's file may hold are the options of all the
role's configurable commands, so ``shoal client status`` reads the ``data_dir`` that
``shoal client run`` uses from the same file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import click

from shoal import config

CONFIG_PATH_KEY = "shoal.config_path"
"""``ctx.meta`` key: the configuration file this command read (or would have)."""

_KNOWN: dict[str, dict[str, click.Option]] = {role: {} for role in config.ROLES}

Command = TypeVar("Command", bound=click.Command)


def environment_variable(role: str, setting: str) -> str:
    return f"SHOAL_{role.upper()}_{setting.upper()}"


def settings_of(role: str) -> dict[str, click.Option]:
    """Every setting a ``role`` file may hold, by key, with its option (for the docs)."""
    return dict(_KNOWN[role])


def configurable(
    role: str,
    reads: Collection[str] | None = None,
    secrets: Collection[str] = (),
    creates: bool = False,
) -> Callable[[Command], Command]:
    """Add ``--config`` and environment variables to a command of ``role``; with
    ``reads``, only those options are settings (``--json`` of a status is not one).
    ``secrets`` are options that are no key of the file: it names their file instead.
    A command that ``creates`` the file accepts a named file that does not exist yet."""

    def decorate(command: Command) -> Command:
        own: set[str] = set()
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.name is None:
                continue
            if (reads is not None and param.name not in reads) or param.name in secrets:
                continue
            if param.envvar is None:
                param.envvar = environment_variable(role, param.name)
            param.show_envvar = True
            _KNOWN[role].setdefault(param.name, param)
            own.add(param.name)

        def load(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
            path, named = (value, True) if value is not None else config.default_path(role)
            ctx.meta[CONFIG_PATH_KEY] = path
            settings = config.load(path, _KNOWN[role].keys(), required=named and not creates)
            mine = {key: item for key, item in settings.items() if key in own}
            ctx.default_map = {**(ctx.default_map or {}), **mine}

        command.params.insert(
            0,
            click.Option(
                ["--config", "config_file"],
                type=click.Path(path_type=Path, dir_okay=False),
                is_eager=True,
                expose_value=False,
                callback=load,
                help=f"Settings file (default: ${config.config_variable(role)}, else "
                f"{config.CONFIG_DIR}/{role}.toml when present). Flags and environment "
                "variables override it.",
            ),
        )
        return command

    return decorate


def config_path() -> Path:
    """The configuration file of the running command (``--config`` or the default)."""
    path: Any = click.get_current_context().meta.get(CONFIG_PATH_KEY)
    if not isinstance(path, Path):
        raise RuntimeError("config_path() outside a configurable command")
    return path
