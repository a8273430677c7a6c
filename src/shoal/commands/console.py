"""``shoal console``: run the management console (web service, REST API, HTTPS)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import click

from shoal.commands.backup import BackupTexts, add_backup_commands
from shoal.commands.daemon import LOG_FORMAT, setup_logging
from shoal.commands.extras import require_extra
from shoal.commands.options import LOG_LEVEL, data_dir_option, database_url_option
from shoal.commands.settings import configurable
from shoal.core.chunking import parse_size
from shoal.core.errors import ShoalError


@configurable("console")
@click.group(invoke_without_command=True)
@data_dir_option(
    "console",
    "Keys, certificate, SQLite database and uploaded packages (created at first start).",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@database_url_option(
    "console",
    "PostgreSQL URL (postgresql://user:pass@host/db); SQLite in --data-dir without it.",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="PEM certificate (chain); a self-signed one is made at first start without it.",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--tls-name",
    "tls_names",
    multiple=True,
    help="Name or address the self-signed certificate also covers (repeat); the --host "
    "address is added when it is not a wildcard.",
)
@click.option(
    "--no-tls",
    is_flag=True,
    help="Serve plain HTTP (only behind a TLS-terminating proxy).",
)
@click.option(
    "--vendor-public-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    envvar="SHOAL_VENDOR_PUBLIC_KEY",
    help="Vendor public key (PEM) that licence keys must be signed by (required: no key "
    "is trusted by default; self-hosting, make one with 'shoal keygen vendor.key').",
)
@click.option(
    "--admin-username",
    default="admin",
    show_default=True,
    help="Name of the first administrator (created at first start).",
)
@click.option(
    "--feed-wait",
    "feed_wait_seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, 30),
    help="Longest a P2P server's long poll of the change feed is held, in seconds "
    "(lower it behind a proxy that cuts idle connections sooner).",
)
@click.option(
    "--max-upload",
    "max_upload",
    default="16G",
    show_default=True,
    help="Largest application upload accepted (e.g. 500M, 16G, 64G); larger ones are "
    "refused with 413.",
)
@click.option(
    "--trusted-origin",
    "trusted_origins",
    multiple=True,
    help="Origin (https://host[:port]) besides the console's own from which a browser "
    "session may make changes: the public address when a proxy rewrites Host (repeat).",
)
@click.option(
    "--login-failures",
    default=5,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Failed logins per user name and per source address before each further attempt "
    "must wait (1 s, then doubling; 429 with Retry-After).",
)
@click.option(
    "--login-max-delay",
    "login_max_delay_seconds",
    default=900.0,
    show_default=True,
    type=click.FloatRange(1, 86400),
    help="Longest wait of a throttled user name or address, in seconds.",
)
@click.option(
    "--document-validity",
    "document_validity_hours",
    default=168,
    show_default=True,
    type=click.IntRange(1, 24 * 365),
    help="Hours a signed assignment document is valid (clients refuse it after); the "
    "console signs it again when less than half is left.",
)
@LOG_LEVEL
@LOG_FORMAT
@click.option(
    "--metrics/--no-metrics",
    "metrics",
    default=True,
    show_default=True,
    help="Serve Prometheus metrics at /metrics (no authentication: restrict it at the "
    "proxy or firewall if the figures are private).",
)
@click.pass_context
def console(
    context: click.Context,
    data_dir: Path,
    host: str,
    port: int,
    database_url: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_names: tuple[str, ...],
    no_tls: bool,
    vendor_public_key: Path | None,
    admin_username: str,
    feed_wait_seconds: float,
    max_upload: str,
    trusted_origins: tuple[str, ...],
    login_failures: int,
    login_max_delay_seconds: float,
    document_validity_hours: int,
    log_level: str,
    log_format: str,
    metrics: bool,
) -> None:
    """Run the console: REST API under /api/v1 over HTTPS (OpenAPI at /api/v1/docs).

    At first start it creates the data directory, its signing key, a self-signed
    certificate, the P2P server authentication key, the database schema and the first
    administrator, whose password comes from SHOAL_ADMIN_PASSWORD or is generated and
    printed once.

    \b
    Subcommands (their options follow their name):
      shoal console backup DIR    database, keys, certificate and content into DIR
      shoal console restore DIR   into an empty --data-dir: the same console again
    """
    if context.invoked_subcommand is not None:
        return
    # Imported here: the console's web stack is heavy and other commands don't need it.
    require_extra("console")
    from shoal.console.app import serve
    from shoal.console.state import ConsoleConfig

    setup_logging(log_level, log_format)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("give both --tls-cert and --tls-key, or neither")
    try:
        max_upload_bytes = parse_size(max_upload)
    except ShoalError:
        raise click.BadParameter(
            f"{max_upload!r} is not a size (examples: 500M, 16G)", param_hint="--max-upload"
        ) from None
    if max_upload_bytes < 1:
        raise click.BadParameter("must be at least 1 byte", param_hint="--max-upload")
    for origin in trusted_origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.path.strip("/"):
            raise click.BadParameter(
                f"{origin!r} is not an origin (https://host[:port])", param_hint="--trusted-origin"
            )
    config = ConsoleConfig(
        data_dir=data_dir,
        database_url=database_url,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls=not no_tls,
        tls_names=tls_names + ((host,) if host not in ("0.0.0.0", "::", "") else ()),
        vendor_public_key=vendor_public_key,
        admin_username=admin_username,
        feed_wait_seconds=feed_wait_seconds,
        max_upload_bytes=max_upload_bytes,
        trusted_origins=trusted_origins,
        login_failures=login_failures,
        login_max_delay_seconds=login_max_delay_seconds,
        document_validity_seconds=document_validity_hours * 3600,
        metrics=metrics,
    )
    serve(config, host, port, log_level)


add_backup_commands(
    console,
    "console",
    BackupTexts(
        title="the console",
        data_dir_help="The console's data directory.",
        backup_help="""Back up the console into the new directory TARGET (safe while it runs).

    The database (SQLite online backup, or pg_dump), the signing keys, the key-wrapping
    key, the P2P server authentication key, the TLS certificate and the content. TARGET
    holds secrets: keep it like the keys themselves.
    """,
        restore_help="""Restore the backup SOURCE into an empty --data-dir (and empty PostgreSQL
    database).

    The restored console has the same keys and certificate: its P2P servers and clients
    accept it without enrolling again. Every file's SHA-256 is checked first.
    """,
        start_hint="shoal console --data-dir {data_dir}",
    ),
)

COMMANDS = (console,)
