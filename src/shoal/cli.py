"""The ``shoal`` command line.

Every error a user can cause (a missing file, a bad chunk size, a corrupt sidecar...)
is a ``ShoalError`` or an ``OSError``; ``main`` prints it as one line on stderr and
exits non-zero, never with a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from shoal import __version__
from shoal.commands.common import fail
from shoal.core.errors import ShoalError

COMMAND_MODULES: dict[str, str] = {
    "keygen": "shoal.commands.content",
    "pack": "shoal.commands.content",
    "verify": "shoal.commands.content",
    "store": "shoal.commands.store",
    "console": "shoal.commands.console",
    "license": "shoal.commands.license",
    "server": "shoal.commands.server",
    "client": "shoal.commands.client",
    "doctor": "shoal.commands.doctor",
}
"""shoal's own commands by name, with the module that defines them (in its ``COMMANDS``)."""


class ShoalGroup(click.Group):
    """The top-level group: shoal's own commands, then those of other distributions.

    Each role keeps its commands in its own module, imported when one of its commands is
    run (or the list is shown): a device's ``shoal client run`` loads neither the
    console's nor the server's commands (~0.4 MB of an idle client's RSS).
    Other distributions' commands (``shoal.commands`` entry points: the development
    tools add ``lab``, ``sim`` and ``bench``) are looked up only when a name is not
    shoal's own or the list is shown, so ``shoal client run`` never loads
    ``importlib.metadata`` either (about 3 MB).
    """

    _plugins: dict[str, click.Command] | None = None

    def _plugin_commands(self) -> dict[str, click.Command]:
        if self._plugins is None:
            from importlib.metadata import entry_points

            self._plugins = {}
            for entry in entry_points(group="shoal.commands"):
                for command in entry.load():
                    self._plugins.setdefault(command.name, command)
        return self._plugins

    def _own_command(self, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            module = importlib.import_module(COMMAND_MODULES[name])
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._own_command(cmd_name) or self._plugin_commands().get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMAND_MODULES, *self.commands, *self._plugin_commands()})


@click.group(cls=ShoalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="shoal")
def cli() -> None:
    """shoal: peer-to-peer software distribution for organisations.

    An administrator uploads a package once; the devices of each office fetch it from
    each other over UDP on their own LAN, so it crosses each office's WAN link once.
    """


def load_all_commands() -> None:
    """Import every command of shoal's own (the docs' tests list every setting)."""
    for name in COMMAND_MODULES:
        cli._own_command(name)


def main() -> None:
    """Entry point: run the CLI, turning expected errors into one-line messages."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("shoal: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except ShoalError as error:
        fail(str(error))
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        fail(f"{where}{error.strerror or error}")
    except KeyboardInterrupt:
        click.echo("shoal: interrupted", err=True)
        sys.exit(130)
