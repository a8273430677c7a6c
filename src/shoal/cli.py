"""The ``shoal`` command line.

Every error a user can cause (a missing file, a bad chunk size, a corrupt sidecar...)
is a ``ShoalError`` or an ``OSError``; ``main`` prints it as one line on stderr and
exits non-zero, never with a traceback.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from shoal import __version__
from shoal.commands.common import fail
from shoal.core.errors import ShoalError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    # Commands of other distributions (the development tools add `lab`, `sim` and
    # `bench`): shoal never imports them by name, so devices install none of them.
    for entry in entry_points(group="shoal.commands"):
        for command in entry.load():
            cli.add_command(command)


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
