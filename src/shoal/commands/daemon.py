"""Running a long-lived process: logging set-up and a clean stop on SIGINT/SIGTERM
(and SIGBREAK, Ctrl-Break, which a Windows service wrapper sends to stop a console
program)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import click

from shoal.core.portable import LINUX_PATHS
from shoal.logs import LOG_FORMATS, configure

if TYPE_CHECKING:
    import asyncio  # imported when a daemon runs (`shoal client run`: lean_imports first)

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
    """Run ``main(stop)`` on a new loop; SIGINT or SIGTERM (or SIGBREAK) sets ``stop``."""
    import asyncio

    async def runner() -> None:
        stop = asyncio.Event()
        install_stop_handlers(asyncio.get_running_loop(), stop)
        await main(stop)

    asyncio.run(runner())


def stop_signals() -> list[signal.Signals]:
    """The signals that stop a daemon here."""
    wanted = ["SIGINT", "SIGTERM", "SIGBREAK"]
    return [getattr(signal, name) for name in wanted if hasattr(signal, name)]


def install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> str:
    """Make every stop signal set ``stop``; say which mechanism was used.

    The loop's own handlers on Linux; elsewhere (Windows, where ``add_signal_handler``
    raises ``NotImplementedError``, or with the portable switch) a plain
    ``signal.signal`` handler that hands the event to the loop thread-safely.
    """
    if LINUX_PATHS:
        for number in stop_signals():
            loop.add_signal_handler(number, stop.set)
        return "loop"

    def handler(_number: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    for number in stop_signals():
        signal.signal(number, handler)
    return "signal"
