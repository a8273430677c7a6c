"""``shoal license``: issue and inspect licence keys (the vendor's side)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import click

from shoal.commands.common import print_json
from shoal.core.signing import SigningKey, VerifyKey
from shoal.licensing import evaluate, issue_licence, read_licence


def _parse_date(
    _context: click.Context | None, _parameter: click.Parameter | None, value: str
) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@click.group(name="license")
def license_group() -> None:
    """Licence keys: signed tokens of customer, seats and expiry."""


@license_group.command(name="issue")
@click.option("--seats", type=click.IntRange(1, 10_000_000), required=True, help="Seats sold.")
@click.option(
    "--expires",
    required=True,
    callback=_parse_date,
    help="Last valid day (YYYY-MM-DD, UTC).",
)
@click.option("--customer", default="self-hosted", show_default=True, help="Customer name.")
@click.option(
    "--vendor-key",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Vendor Ed25519 private key (PEM) that signs the licence; make one with "
    "'shoal keygen vendor.key' and give the console vendor.key.pub.",
)
def issue(seats: int, expires: date, customer: str, vendor_key: Path) -> None:
    """Print a licence key; save it on the console with PUT /api/v1/license."""
    key = SigningKey.load(vendor_key)
    click.echo(issue_licence(key, customer, seats, expires, datetime.now(UTC).date()))


@license_group.command(name="inspect")
@click.argument("key_text", metavar="KEY")
@click.option(
    "--vendor-key",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Vendor public (or private) key the licence must be signed by.",
)
@click.option("--seats-used", type=click.IntRange(0), default=0, help="Show overage for this.")
def inspect(key_text: str, vendor_key: Path, seats_used: int) -> None:
    """Check a licence key's signature and print its fields and status as JSON."""
    licence = read_licence(key_text, VerifyKey.load(vendor_key))
    status = evaluate(licence, seats_used, datetime.now(UTC))
    print_json({**status.as_dict(), "licence_id": licence.licence_id})


COMMANDS = (license_group,)
