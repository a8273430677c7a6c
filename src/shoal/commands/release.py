"""``shoal client install-release``: the install action of a client release.

Run by the client itself, from the install specification the console signs for the
release (``shoal.release_policy.release_spec``); see ``shoal.client.self_upgrade`` and
docs/operations.md ("Upgrading through the swarm").
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shoal import __version__

EXIT_NOT_INSTALLED = 1
EXIT_INVALID = 2


@click.command("install-release")
@click.argument("wheel", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--version", "version", help="The release's version: the wheel must be it.")
@click.option(
    "--installed",
    "installed",
    metavar="VERSION",
    help="Only check: exit 0 if this client (on disk) is VERSION or newer, else 1.",
)
def install_release(wheel: Path | None, version: str | None, installed: str | None) -> None:
    """Replace this client's program with the release WHEEL (a verified download); the
    client then restarts into it (exit code 75, restarted by the service manager)."""
    from shoal.client.self_upgrade import ReleaseInvalid, install_wheel, installed_version
    from shoal.versions import InvalidVersion, parse_version

    if installed is not None:
        on_disk = installed_version() or __version__
        try:
            newer = parse_version(on_disk) >= parse_version(installed)
        except InvalidVersion as error:
            click.echo(str(error), err=True)
            sys.exit(EXIT_INVALID)
        click.echo(f"client {on_disk} installed")
        sys.exit(0 if newer else EXIT_NOT_INSTALLED)
    if wheel is None or version is None:
        raise click.UsageError("give the WHEEL and its --version (or --installed VERSION)")
    try:
        done = install_wheel(wheel, version)
    except (ReleaseInvalid, OSError) as error:
        click.echo(f"client release not installed: {error}", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"client {__version__} replaced by {done}; it restarts into it")
