"""``shoal server run``: the P2P server."""

from __future__ import annotations

from pathlib import Path

import click

from shoal import ports
from shoal.commands.backup import BackupTexts, add_backup_commands
from shoal.commands.daemon import LOG_FORMAT, run_until_signalled, setup_logging
from shoal.commands.extras import require_extra
from shoal.commands.options import LOG_LEVEL, data_dir_option, database_url_option, port_option
from shoal.commands.settings import configurable
from shoal.config import read_secret


@click.group()
def server() -> None:
    """The P2P server: one per central office, origin of last resort for its clients."""


@configurable("server", secrets=("auth_key",))
@server.command("run")
@data_dir_option("server", "Origin content store, SQLite state (created at first start).")
@click.option(
    "--console",
    "console_url",
    required=True,
    envvar="SHOAL_CONSOLE_URL",
    help="The console's base URL, e.g. https://console.example:8443",
)
@click.option(
    "--server-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the P2P server authentication key shown by the console "
    "(readable by the server's user only).",
)
@click.option(
    "--auth-key",
    envvar="SHOAL_SERVER_AUTH_KEY",
    help="The authentication key itself (prefer --server-key-file: a command line is "
    "visible to every user of the host).",
)
@click.option(
    "--console-ca",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    envvar="SHOAL_CONSOLE_CA",
    help="CA (or self-signed) certificate the console's HTTPS must chain to.",
)
@click.option(
    "--address",
    required=True,
    help="This server's IP address; it must be in a Central Office subnet.",
)
@click.option("--name", default="p2p-server", show_default=True, help="Name shown in the console.")
@database_url_option("server", "PostgreSQL URL; SQLite in --data-dir without it.")
@click.option(
    "--bind", default="0.0.0.0", show_default=True, help="Address the UDP sockets listen on."
)
@port_option("--control-port", "the console's P2P setting", ports.CONTROL)
@port_option("--data-port", "the console's P2P setting", ports.FOREGROUND_DATA)
@port_option("--background-port", "the console's P2P setting", ports.BACKGROUND_DATA)
@click.option(
    "--discovery-port",
    type=int,
    help=f"Broadcast port clients are told to use; default: the console's, else {ports.DISCOVERY}.",
)
@click.option(
    "--checkin-seconds",
    default=60,
    show_default=True,
    type=click.IntRange(1, 86400),
    help="How often clients check in (each adds +-20% jitter).",
)
@click.option(
    "--lease-seconds",
    default=10.0,
    show_default=True,
    type=float,
    help="A rendezvous point silent this long is replaced.",
)
@click.option(
    "--office-links",
    "office_links",
    multiple=True,
    metavar="NAME=WAN/UP",
    help="An office's WAN and client uplink rates in Mbit/s (repeat per office): its "
    "WAN copy is fetched by one client where one uplink keeps up with the WAN, else "
    "striped over as many as its uplinks need (default: one stripe per client).",
)
@click.option(
    "--sync-seconds",
    default=2.0,
    show_default=True,
    type=float,
    help="How long one long poll of the console's change feed lasts (changes arrive at "
    "once), and how long to wait before asking an unreachable console again.",
)
@click.option(
    "--report-seconds",
    default=10.0,
    show_default=True,
    type=float,
    help="How often to report clients and statistics to the console.",
)
@click.option(
    "--client-expiry-days",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="A device silent this long leaves the registry (its console seat stays until it "
    "is retired in the console).",
)
@click.option(
    "--stall-seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="A rendezvous point that fetches no chunk this long loses the lease.",
)
@click.option(
    "--ban-reporters",
    default=2,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Distinct devices that must report a peer before it is banned in their office.",
)
@click.option(
    "--no-direct",
    is_flag=True,
    help="Refuse clients outside every known network (default: serve them).",
)
@click.option(
    "--retry-max-seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Longest wait between attempts to reach an unreachable console (the waits double "
    "from --sync-seconds, with random jitter, up to this).",
)
@click.option(
    "--metrics",
    "metrics_address",
    metavar="ADDR:PORT",
    help="Serve Prometheus /metrics and /api/v1/health/{live,ready} over plain HTTP here "
    "(e.g. 127.0.0.1:9465); off by default.",
)
@LOG_LEVEL
@LOG_FORMAT
def run(
    data_dir: Path,
    console_url: str,
    server_key_file: Path | None,
    auth_key: str | None,
    console_ca: Path | None,
    address: str,
    name: str,
    database_url: str | None,
    bind: str,
    control_port: int | None,
    data_port: int | None,
    background_port: int | None,
    discovery_port: int | None,
    checkin_seconds: int,
    lease_seconds: float,
    office_links: tuple[str, ...],
    sync_seconds: float,
    report_seconds: float,
    client_expiry_days: float,
    stall_seconds: float,
    ban_reporters: int,
    no_direct: bool,
    retry_max_seconds: float,
    metrics_address: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run the P2P server: serve clients over UDP, follow the console over HTTPS.

    It registers with the console (activated once a licence key is saved there),
    fetches the content of every application into its origin store, and relays signed
    assignments, manifests and rendezvous leases to its clients. Its X25519 key is
    created in --data-dir and certified by the console; devices join it with the
    console's enrollment bundle (`shoal client enroll`).
    """
    require_extra("server")
    from shoal.server.stripe_plan import parse_office_links

    try:  # before the service's imports: a wrong value is said at once
        links = parse_office_links(office_links)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--office-links") from None
    from shoal.server.limits import AbuseLimits
    from shoal.server.metrics_listener import parse_listen_address
    from shoal.server.service import ServerConfig, ServerService

    if auth_key is None:
        if server_key_file is None:
            raise click.UsageError(
                "the P2P server authentication key is missing: set server_key_file in "
                "the settings file (or --server-key-file, or SHOAL_SERVER_AUTH_KEY)"
            )
        auth_key = read_secret(server_key_file, "P2P server authentication key")
    try:
        metrics = parse_listen_address(metrics_address) if metrics_address else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--metrics") from None
    setup_logging(log_level, log_format)
    service = ServerService(
        ServerConfig(
            data_dir=data_dir,
            console_url=console_url,
            auth_key=auth_key,
            address=address,
            name=name,
            console_ca=console_ca,
            database_url=database_url,
            bind=bind,
            control_port=control_port,
            data_port=data_port,
            background_port=background_port,
            discovery_port=discovery_port,
            checkin_seconds=checkin_seconds,
            lease_seconds=lease_seconds,
            office_links=links,
            sync_seconds=sync_seconds,
            report_seconds=report_seconds,
            direct_outside_offices=not no_direct,
            retry_max_seconds=retry_max_seconds,
            metrics=metrics,
            limits=AbuseLimits(
                client_expiry=client_expiry_days * 86400,
                stall_seconds=stall_seconds,
                ban_reporters=ban_reporters,
            ),
        )
    )
    run_until_signalled(service.run)


add_backup_commands(
    server,
    "server",
    BackupTexts(
        title="the P2P server",
        data_dir_help="The P2P server's data directory.",
        backup_help="Back up the P2P server (its key, state database and origin store) "
        "into TARGET.",
        restore_help="Restore the backup SOURCE into an empty --data-dir: same key, so its "
        "clients and the console know it again.",
        start_hint="shoal server run --data-dir {data_dir} ...",
    ),
)

COMMANDS = (server,)
