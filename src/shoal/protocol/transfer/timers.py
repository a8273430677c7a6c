"""The transfer engine's timers: one heap of deadlines, deleted lazily.

Theory of operation
-------------------
Every deadline a transfer arms (an ACK due, a request to repeat, a loss or probe timeout,
a pacing wake-up, a peer falling silent) is pushed as ``(deadline, sequence, kind,
target)``. Nothing is ever removed when a deadline moves or its transfer ends: the
entry goes stale, and whoever looks at the top (``get_timer``, ``handle_timer``) checks
it against the target's current deadline and drops it if it no longer matches. So
arming costs one ``heappush`` and finding the next wake-up costs a look at the top, not
a scan of every transfer. ``compact`` drops the stale entries when they outnumber the
live ones, so the heap stays the size of what is armed.

What is live for each kind is the engine's to say (it knows the transfers); this module
only orders them.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable
from typing import Any


class TimerKind(enum.IntEnum):
    """What a deadline is for (and so how to check it is still armed)."""

    #: No transfer with the peer (either way) heard from it for ``idle_timeout``.
    PEER_IDLE = 0
    #: The receiver's delayed ACK (``max_ack_delay``) is due.
    ACK = 1
    #: An unanswered chunk request is to be repeated (RFC 6298 timer).
    REQUEST_RETRY = 2
    #: A packet sent before an acknowledged one is lost by time (RFC 9002 §6.1.2).
    LOSS = 3
    #: The probe / retransmission timeout of an upload (RFC 9002 §6.2, RFC 6298).
    RTO = 4
    #: A paced flow may send again.
    PACING = 5


#: An entry: (deadline, sequence, kind, target). The sequence breaks ties in push order,
#: so targets are never compared. The target's type follows from the kind (a download,
#: an upload, a flow, a peer's address), which only the engine reads: typed ``Any`` so
#: that reading it costs no ``typing.cast`` call (a Python call in CPython) per look.
Entry = tuple[float, int, TimerKind, Any]


class DeadlineHeap:
    """Deadlines in time order, with lazy deletion (see the module docstring)."""

    __slots__ = ("_sequence", "entries")

    def __init__(self) -> None:
        #: The heap itself (``heapq`` order: ``entries[0]`` is the earliest, live or
        #: stale). Read it, never change it but through the methods: the engine looks
        #: at the top on every ``get_timer``, and a method call there costs more than
        #: the look itself.
        self.entries: list[Entry] = []
        self._sequence = 0

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, deadline: float, kind: TimerKind, target: object) -> None:
        """Arm ``kind`` for ``target`` at ``deadline`` (an earlier entry just goes stale)."""
        self._sequence += 1
        heapq.heappush(self.entries, (deadline, self._sequence, kind, target))

    def peek(self) -> Entry | None:
        """The earliest entry, live or stale, or None."""
        return self.entries[0] if self.entries else None

    def pop(self) -> Entry:
        """Remove and return the earliest entry."""
        return heapq.heappop(self.entries)

    def compact(self, is_live: Callable[[float, TimerKind, Any], bool]) -> None:
        """Drop every entry ``is_live`` rejects (the order of the rest is kept), in place."""
        entries = self.entries
        entries[:] = [entry for entry in entries if is_live(entry[0], entry[2], entry[3])]
        heapq.heapify(entries)
