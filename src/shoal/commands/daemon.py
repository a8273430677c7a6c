"""Running a long-lived process: logging set-up and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import click

from shoal.logs import LOG_FORMATS, configure

LOG_LEVELS = ["debug", "info", "warning", "error"]


LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    envvar="SHOAL_LOG_FORMAT",
    help="One event per line: 'text' (key=value fields) or 'json' (one object per line).",
)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Structured logging for a long-lived process (see ``shoal.logs``)."""
    configure(level, log_format)


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)`` on a new loop; SIGINT or SIGTERM sets ``stop``."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        await main(stop)

    asyncio.run(runner())
