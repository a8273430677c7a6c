"""A flow's delivery rate as a share of the most it carried lately (for LEDBAT).

Theory of operation. A delay-based background flow gives way when the queue it sees
rises above its TARGET (RFC 6817 §2.4.2). A competitor that keeps less queue than that
-- BBR, which keeps about one bandwidth-delay product in flight, or a window-limited
flow -- never pushes the queue there: the two flows then share the link, and the
background flow keeps a part of it (in the lab, beside Linux BBR, TCP kept 0.75-0.88 of
its rate alone). What does show the competitor is the background flow's own delivery
rate: alone, it carries the link; beside another flow, less, while its window is in use.

``DeliveryShare`` measures the packets acknowledged over intervals of at least
``_INTERVAL`` seconds (and at least a round trip, so that ACKs bunched by a busy host
average out), keeps the most per minute over the last ``history`` minutes (as RFC 6817
§3.4.2 keeps the base delay, so a slower path is learnt within minutes), and reports
``share``: the last interval's rate over that maximum. Intervals in which the flow did
not use its window (RFC 7661 §4.3: nothing to send) are not rate samples.
"""

from __future__ import annotations

from collections import deque

#: Shortest interval a rate is measured over, seconds.
_INTERVAL = 0.25


class DeliveryShare:
    """The last interval's delivery rate over the most of the last minutes."""

    __slots__ = ("_acked", "_app_limited", "_history", "_minute", "_start", "share")

    def __init__(self, history: int) -> None:
        self._history: deque[float] = deque(maxlen=history)
        self._minute: int | None = None
        self._start: float | None = None
        self._acked = 0
        self._app_limited = False
        #: The last full interval's rate over the most per interval lately, in (0, 1].
        self.share = 1.0

    def on_ack(self, newly_acked: int, window_in_use: bool, now: float, srtt: float) -> float:
        """Count ``newly_acked`` packets acknowledged at ``now``; return ``share``."""
        if self._start is None:
            self._start = now
            return self.share
        self._acked += newly_acked
        self._app_limited = self._app_limited or not window_in_use
        elapsed = now - self._start
        if elapsed < max(_INTERVAL, srtt):
            return self.share
        rate = self._acked / elapsed
        app_limited = self._app_limited
        self._start, self._acked, self._app_limited = now, 0, False
        if app_limited:
            return self.share
        minute = int(now // 60)
        history = self._history
        if self._minute != minute or not history:
            self._minute = minute
            history.append(rate)
        elif rate > history[-1]:
            history[-1] = rate
        self.share = min(1.0, rate / max(history))
        return self.share
