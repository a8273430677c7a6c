"""CUBIC's window growth (RFC 9438), for a foreground flow that competes with TCP.

A foreground transfer that finds a loss-based flow holding the bottleneck's queue
(``DelayReno``'s *competing* mode) must take the share a TCP flow would take there.
Linux's TCP is CUBIC: its window grows with the time since the last reduction, not per
round trip, so behind a deep buffer (a round trip of hundreds of milliseconds) NewReno's
packet per round trip gets a small fraction of what CUBIC gets -- the shoal download
starves while the user's bulk download holds the queue. Competing with CUBIC's own
rules (concave growth back to the window of the last reduction, convex probing beyond
it, ``BETA`` = 0.7) shares the link as a second CUBIC flow would.

The window is counted in packets and time in seconds, as RFC 9438's formulas are.
"""

from __future__ import annotations

#: RFC 9438 §4.6 beta_cubic: the window after a reduction, as a fraction of before.
BETA = 0.7
#: RFC 9438 §5.1 C, in packets per second cubed.
C = 0.4
#: RFC 9438 §4.3 alpha_cubic: the Reno-friendly region's additive increase.
_ALPHA = 3 * (1 - BETA) / (1 + BETA)


class CubicGrowth:
    """The time-based part of CUBIC: W_max, the epoch, K and the Reno estimate."""

    __slots__ = ("epoch_start", "k", "reno_estimate", "w_max")

    def __init__(self) -> None:
        #: Window just before the last reduction (RFC 9438 §4.2 W_max).
        self.w_max = 0.0
        #: When the current congestion-avoidance epoch began (None: at the next ACK).
        self.epoch_start: float | None = None
        self.k = 0.0
        #: RFC 9438 §4.3 W_est: what Reno would have by now.
        self.reno_estimate = 0.0

    def reduce(self, cwnd: float) -> float:
        """A congestion event at window ``cwnd``: return the window after it (§4.6),
        with fast convergence (§4.7): a flow whose W_max shrinks gives way sooner."""
        if cwnd < self.w_max:
            self.w_max = cwnd * (1 + BETA) / 2
        else:
            self.w_max = cwnd
        self.epoch_start = None
        return cwnd * BETA

    def start_from(self, w_max: float) -> None:
        """Begin competing as if the last reduction happened at window ``w_max``."""
        self.w_max = w_max
        self.epoch_start = None

    def grow(self, cwnd: float, newly_acked: int, now: float, rtt: float) -> float:
        """The window after ``newly_acked`` packets were acknowledged in congestion
        avoidance at ``now`` (RFC 9438 §4.2-4.4), ``rtt`` the smoothed round trip."""
        if self.epoch_start is None:
            # §4.2: the epoch starts at the first ACK of congestion avoidance.
            self.epoch_start = now
            self.k = (max(self.w_max - cwnd, 0.0) / C) ** (1 / 3)
            self.reno_estimate = cwnd
        elapsed = now - self.epoch_start
        # §4.2: aim at W_cubic(t + RTT), at most 1.5 x cwnd (§4.4 target bounds).
        target = C * (elapsed + rtt - self.k) ** 3 + self.w_max
        target = min(max(target, cwnd), 1.5 * cwnd)
        # §4.3: the Reno-friendly region.
        self.reno_estimate += _ALPHA * newly_acked / cwnd
        grown = cwnd + (target - cwnd) * newly_acked / cwnd
        return max(grown, self.reno_estimate)
