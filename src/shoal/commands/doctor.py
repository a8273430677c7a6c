"""``shoal doctor client`` and ``shoal doctor server``: what is wrong, and how to fix it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shoal import ports
from shoal.commands.options import data_dir_option, database_url_option

if TYPE_CHECKING:  # shoal.health imports SQLAlchemy: only for the server's checks
    from shoal.health import CheckResult


def _report(checks: list[CheckResult], as_json: bool) -> None:
    from shoal.doctor import render_json, render_table

    click.echo(render_json(checks) if as_json else render_table(checks))
    sys.exit(0 if all(check.ok for check in checks) else 1)


JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object: ok and the checks.")


@click.group()
def doctor() -> None:
    """Check a device or a P2P server: a table of checks with the fix for each failure.

    Exits 1 when any check fails (0 when all pass), so it can gate a deployment.
    """


@doctor.command("client")
@data_dir_option("client", "The agent's data directory (enrollment, device key, cache).")
@click.option("--server", help="P2P server address (default: the enrollment's).")
@click.option("--server-port", type=int, help="Default: the enrollment's.")
@click.option("--ip", help="This device's address (default: the one that routes to the server).")
@click.option("--prefix", type=click.IntRange(0, 32), help="Subnet prefix length of --ip.")
@click.option(
    "--timeout",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0.5, 60),
    help="Seconds to wait for the server's answer and for peers' answers to the broadcast probe.",
)
@JSON
def client_command(
    data_dir: Path,
    server: str | None,
    server_port: int | None,
    ip: str | None,
    prefix: int | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Check this device: ports, server reachable and key right, versions, licence,
    broadcast heard on the subnet, clock, disk space.

    When the agent is not running, the doctor registers the device with its server as
    the agent does (the same licence seat); when it runs, it reads the agent's status.
    """
    from shoal.doctor.client import client_checks

    _report(
        client_checks(
            data_dir, server=server, server_port=server_port, ip=ip, prefix=prefix, timeout=timeout
        ),
        as_json,
    )


@doctor.command("server")
@data_dir_option("server")
@click.option("--console", "console_url", required=True, envvar="SHOAL_CONSOLE_URL")
@click.option("--auth-key", required=True, envvar="SHOAL_SERVER_AUTH_KEY")
@click.option(
    "--console-ca",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    envvar="SHOAL_CONSOLE_CA",
)
@click.option("--address", default="", help="This server's IP address (as for `server run`).")
@database_url_option("server")
@click.option("--bind", default="0.0.0.0", show_default=True)
@click.option("--control-port", default=ports.CONTROL, show_default=True, type=int)
@click.option("--data-port", default=ports.FOREGROUND_DATA, show_default=True, type=int)
@click.option("--background-port", default=ports.BACKGROUND_DATA, show_default=True, type=int)
@JSON
def server_command(
    data_dir: Path,
    console_url: str,
    auth_key: str,
    console_ca: Path | None,
    address: str,
    database_url: str | None,
    bind: str,
    control_port: int,
    data_port: int,
    background_port: int,
    as_json: bool,
) -> None:
    """Check this P2P server with the options of `shoal server run`: ports, database,
    origin store, console reachable, key, versions, activation, clock against the console."""
    from shoal.doctor.server import server_checks

    _report(
        server_checks(
            data_dir=data_dir,
            console_url=console_url,
            auth_key=auth_key,
            address=address,
            console_ca=console_ca,
            database_url=database_url,
            bind=bind,
            ports={"control": control_port, "data": data_port, "background": background_port},
        ),
        as_json,
    )


COMMANDS = (doctor,)
