"""One re-armable wake-up on an asyncio loop, for a machine's ``get_timer`` deadline.

The socket endpoint and the multi-port runner both wake their machines at the deadline
the machine names; arming again for the same deadline keeps the handle (no churn on the
loop's timer heap), a new deadline replaces it, ``None`` cancels it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LoopTimer:
    """Calls ``callback(deadline)`` once at the deadline last armed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[float], None]):
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self.deadline: float | None = None

    def arm(self, deadline: float | None) -> None:
        """Wake at ``deadline`` (loop time), or never with None."""
        if self._handle is not None and self.deadline != deadline:
            self._handle.cancel()
            self._handle = None
        if self._handle is None and deadline is not None:
            self.deadline = deadline
            self._handle = self._loop.call_at(deadline, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self.deadline = None

    def _fire(self) -> None:
        deadline = self.deadline
        self._handle = None
        self.deadline = None
        if deadline is not None:
            self._callback(deadline)
