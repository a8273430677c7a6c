"""``shoal client enroll``, ``run`` and ``status``: the agent on a device."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shoal import __version__, ports
from shoal.commands.daemon import LOG_FORMAT, run_until_signalled, setup_logging
from shoal.commands.options import LOG_LEVEL, data_dir_option, port_option
from shoal.commands.settings import config_path, configurable, settings_of
from shoal.core.chunking import parse_size

if TYPE_CHECKING:  # imported by start_client, after import_lean
    from shoal.store.content_store import ContentStore

DATA_DIR = data_dir_option(
    "client", "Device key, enrollment, cache and status (created at first start)."
)


@click.group()
def client() -> None:
    """The agent on every device: downloads assignments from peers, serves its cache."""


@configurable("client", reads=("data_dir",), creates=True)
@client.command("enroll")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@DATA_DIR
@click.option(
    "--replace",
    is_flag=True,
    help="Enroll with another console than the one this device trusts now.",
)
def enroll_command(bundle: Path, data_dir: Path, replace: bool) -> None:
    """Enroll this device from BUNDLE, the console's enrollment bundle of its P2P server
    (GET /api/v1/servers/ID/enrollment-bundle): pins the console key, keeps the
    enrollment token (a secret, mode 0600) in the data directory, and writes the
    client's settings file (--config) so that `shoal client run` needs no flag."""
    from shoal.client.enrollment import EnrollmentError, enroll, read_bundle
    from shoal.client.settings_file import write_client_settings

    try:
        enrollment = enroll(data_dir, read_bundle(bundle), replace=replace)
    except EnrollmentError as error:
        raise click.ClickException(str(error)) from None
    settings = config_path()
    write_client_settings(settings, data_dir, enrollment, settings_of("client").keys())
    certificate = enrollment.console_cert_sha256 or "none (plain HTTP behind a proxy)"
    click.echo(
        f"enrolled: console key {enrollment.console_key.hex()[:16]}... pinned, console "
        f"certificate {certificate}, P2P server {enrollment.server}:{enrollment.server_port}; "
        f"settings written to {settings}"
    )


@configurable("client")
@client.command("run")
@DATA_DIR
@click.option(
    "--enrollment",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    envvar="SHOAL_ENROLLMENT",
    help="Enrollment bundle to enroll with at first start (else `shoal client enroll`).",
)
@click.option(
    "--server",
    envvar="SHOAL_SERVER",
    help="The P2P server's IP address (default: the enrollment's).",
)
@click.option("--server-port", type=int, help="Default: the enrollment's.")
@click.option("--ip", help="This device's address (default: the one that routes to the server).")
@click.option(
    "--prefix",
    type=click.IntRange(0, 32),
    help="Subnet prefix length of --ip (default: read from the interface).",
)
@click.option("--hostname", default="", help="Name shown in the console (default: host name).")
@port_option("--discovery-port", "as the console set it (kept from the last run)", ports.DISCOVERY)
@port_option("--data-port", "as the console set it", ports.FOREGROUND_DATA)
@port_option("--background-port", "as the console set it", ports.BACKGROUND_DATA)
@click.option(
    "--cache-size",
    help="Cap of the cache (e.g. 20G); unassigned content is evicted "
    "least recently used first. Unlimited without it.",
)
@click.option(
    "--bind-ip",
    is_flag=True,
    help="Listen on --ip only, not on every address: for several agents on one host "
    "(broadcast discovery then needs a WiFi office's peer lists).",
)
@click.option(
    "--install-retry-seconds",
    type=click.FloatRange(0.0, 86400.0),
    default=30.0,
    show_default=True,
    envvar="SHOAL_INSTALL_RETRY_SECONDS",
    help="Wait before the 2nd attempt of a failed install (4x that before the 3rd).",
)
@LOG_LEVEL
@LOG_FORMAT
@click.option(
    "--metrics-textfile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the agent's counters here every second, in Prometheus text format, "
    "for node-exporter's textfile collector (e.g. /var/lib/node_exporter/shoal.prom).",
)
@click.option("--claim-version", hidden=True, help="Compatibility tests: report this version.")
def run(**options: Any) -> None:
    """Run the agent: register (one licence seat), check in, download, serve peers."""
    start_client(**options)  # the options are start_client's parameters, typed there


def start_client(
    *,
    data_dir: Path,
    enrollment: Path | None,
    server: str | None,
    server_port: int | None,
    ip: str | None,
    prefix: int | None,
    hostname: str,
    discovery_port: int | None,
    data_port: int | None,
    background_port: int | None,
    cache_size: str | None,
    bind_ip: bool,
    log_level: str,
    log_format: str,
    metrics_textfile: Path | None,
    claim_version: str | None,
    store_factory: type[ContentStore] | None = None,
    install_retry_seconds: float = 30.0,
) -> None:
    """`shoal client run`'s body; the lab calls it with a lying ``store_factory``
    (default: ``ContentStore``)."""
    from shoal.client.lean_imports import import_lean

    import_lean()  # no TLS, no second OpenSSL: ~4.7 MB less (shoal.client.lean_imports)
    from shoal.client.service import ClientConfig, ClientService
    from shoal.store.content_store import ContentStore

    setup_logging(log_level, log_format)
    service = ClientService(
        ClientConfig(
            data_dir=data_dir,
            server=server,
            server_port=server_port,
            enrollment=enrollment,
            ip=ip,
            prefix=prefix,
            hostname=hostname,
            discovery_port=discovery_port,
            data_port=data_port,
            background_port=background_port,
            cache_bytes=parse_size(cache_size) if cache_size else None,
            bind_all=not bind_ip,
            version=claim_version or __version__,
            install_retry_seconds=install_retry_seconds,
            metrics_textfile=metrics_textfile,
        ),
        store_factory or ContentStore,
    )
    run_until_signalled(service.run)
    if service.restart_into:  # a client release replaced this program
        from shoal.client.self_upgrade import RESTART_EXIT_CODE

        sys.exit(RESTART_EXIT_CODE)  # systemd's Restart=on-failure starts the new one


@configurable("client", reads=("data_dir",))
@client.command("status")
@DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option("--watch", is_flag=True, help="Redraw every second until Ctrl-C.")
def status(data_dir: Path, as_json: bool, watch: bool) -> None:
    """Show each assignment with progress, bytes from peers and from the server,
    peers used, each install (state, attempts, exit code, output of a failed one), and
    any refusal by the server (what to upgrade, licence problems)."""
    from shoal.client.service import read_status, render_status

    while True:
        current = read_status(data_dir)
        if as_json:
            click.echo(json.dumps(current, sort_keys=True))
        else:
            text = render_status(current)
            if watch and sys.stdout.isatty():
                click.clear()
            click.echo(text)
        if not watch:
            return
        time.sleep(1)


from shoal.commands.release import install_release  # noqa: E402

client.add_command(install_release)
COMMANDS = (client,)
