"""The ``shoal`` command line.

Every error a user can cause (a missing file, a bad chunk size, a corrupt sidecar...)
is a ``ShoalError`` or an ``OSError``; ``main`` prints it as one line on stderr and
exits non-zero, never with a traceback.
"""

from __future__ import annotations

import sys

import click

from shoal import __version__
from shoal.commands.common import fail
from shoal.core.errors import ShoalError


class ShoalGroup(click.Group):
    """The top-level group: shoal's own commands, then those of other distributions.

    Other distributions' commands (``shoal.commands`` entry points: the development
    tools add ``lab``, ``sim`` and ``bench``) are looked up only when a name is not
    shoal's own or the list is shown, so a device's ``shoal client run`` never loads
    ``importlib.metadata`` (about 3 MB of a client's 40 MB budget).
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

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugin_commands().get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugin_commands()})


@click.group(cls=ShoalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="shoal")
def cli() -> None:
    """shoal: peer-to-peer software distribution for organisations.

    An administrator uploads a package once; the devices of each office fetch it from
    each other over UDP on their own LAN, so it crosses each office's WAN link once.
    """


def _register_commands() -> None:
    # Each role keeps its commands in its own module; the group only collects them.
    from shoal.commands import client, console, content, doctor, license, server, store

    for module in (content, store, console, license, server, client, doctor):
        for command in module.COMMANDS:
            cli.add_command(command)
    # Commands of other distributions: ShoalGroup finds them when asked (shoal never
    # imports them by name, so devices install none of them).


_register_commands()


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
