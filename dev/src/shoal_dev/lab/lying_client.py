"""A lying peer for the lab: ``shoal client run`` with a cache that corrupts what it serves.

Started as ``python -m shoal_dev.lab.lying_client`` with the same options as ``shoal
client run`` (``Deployment.start_clients(..., liars=...)``), so that the ``corrupt-peer``
scenario runs a real process that peers must catch and ban, while the product has no
flag that makes it lie: the fault is injected by the caller (``store_factory``).
"""

from __future__ import annotations

from typing import Any

import click

from shoal.commands.client import run, start_client
from shoal_dev.lab.faults import CorruptingStore


def _run_lying(**options: Any) -> None:
    start_client(store_factory=CorruptingStore, **options)


main = click.Command(
    "lying-client",
    params=run.params,
    callback=_run_lying,
    help="Run a client whose cache serves every chunk corrupted (lab only).",
)

if __name__ == "__main__":
    main()
