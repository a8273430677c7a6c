"""RTT estimation and the two congestion controllers a transfer can choose.

Windows are counted in packets (full-size data datagrams), as every data datagram of a
flow but the last of each chunk is full size. The engine calls:

- ``on_ack(newly_acked, in_flight, now, one_way_delay_us)`` for every ACK that
  acknowledged new segments,
- ``on_congestion(now)`` at most once per recovery epoch (losses of packets sent after
  the previous reduction), and
- ``on_timeout()`` when the retransmission timer expires twice in a row.
"""

from __future__ import annotations

from collections import deque

from shoal.protocol.transfer.config import TransferConfig

_U32 = 1 << 32
_HALF_U32 = 1 << 31


class RttEstimator:
    """Smoothed RTT and retransmission timeout, RFC 6298 §2."""

    __slots__ = (
        "_initial",
        "backoff",
        "latest",
        "max_rto",
        "min_rto",
        "min_rtt",
        "rttvar",
        "srtt",
    )

    #: Clock granularity G of RFC 6298 §2 (the engine's times are floats in seconds).
    GRANULARITY = 0.001

    def __init__(self, initial_rtt: float, min_rto: float, max_rto: float) -> None:
        self.srtt: float | None = None
        self.rttvar = initial_rtt / 2
        self.latest = initial_rtt
        self.min_rtt = float("inf")
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.backoff = 1
        self._initial = initial_rtt

    def on_sample(self, rtt: float) -> None:
        """Fold in one RTT measurement (never from a retransmission: RFC 6298 §3, Karn)."""
        self.latest = rtt
        self.min_rtt = min(self.min_rtt, rtt)
        if self.srtt is None:
            # RFC 6298 §2.2: the first measurement.
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # RFC 6298 §2.3: beta = 1/4, alpha = 1/8.
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.backoff = 1

    @property
    def smoothed(self) -> float:
        return self._initial if self.srtt is None else self.srtt

    @property
    def rto(self) -> float:
        """RTO = SRTT + max(G, 4 * RTTVAR) (RFC 6298 §2.3), backed off (§5.5), clamped."""
        base = self.smoothed + max(self.GRANULARITY, 4 * self.rttvar)
        return min(self.max_rto, max(self.min_rto, base) * self.backoff)


class NewReno:
    """Foreground congestion control: RFC 5681 slow start and congestion avoidance,
    with one window reduction per loss episode as in RFC 6582 / RFC 9002 §7.3.2."""

    __slots__ = ("cwnd", "max_cwnd", "min_cwnd", "ssthresh")

    def __init__(self, config: TransferConfig) -> None:
        self.cwnd = float(config.initial_window_packets)
        self.min_cwnd = float(config.min_window_packets)
        self.max_cwnd = float(config.max_window_packets)
        self.ssthresh = float("inf")

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, newly_acked: int, in_flight: int, now: float, one_way_delay_us: int) -> None:
        # RFC 7661 §4.3: do not grow a window the sender is not using.
        if in_flight + newly_acked < self.cwnd / 2:
            return
        if self.cwnd < self.ssthresh:
            # RFC 5681 §3.1 slow start: one packet per packet acknowledged.
            self.cwnd += newly_acked
        else:
            # RFC 5681 §3.1 congestion avoidance: about one packet per RTT.
            self.cwnd += newly_acked / self.cwnd
        if self.cwnd > self.max_cwnd:
            self.cwnd = self.max_cwnd

    def on_congestion(self, now: float) -> None:
        # RFC 5681 §3.1 eq. (4) / RFC 6582 §3.2 step 2: halve once per episode.
        self.ssthresh = max(self.cwnd / 2, self.min_cwnd)
        self.cwnd = self.ssthresh

    def on_timeout(self) -> None:
        # RFC 5681 §3.1: after an RTO the window restarts from the loss window.
        self.ssthresh = max(self.cwnd / 2, self.min_cwnd)
        self.cwnd = self.min_cwnd


class Ledbat:
    """Background congestion control, RFC 6817 (LEDBAT).

    The receiver reports, in every ACK, the one-way delay of the newest data packet
    (its clock minus the sender's timestamp; the clock offset cancels out because only
    differences to the base delay are used, RFC 6817 §3.3). The sender keeps the base
    delay as the minimum over ``BASE_HISTORY`` one-minute buckets (§3.4.2) and the
    current delay as the minimum of the last ``CURRENT_FILTER`` samples (§3.4.2), and
    steers the queuing delay it causes towards ``TARGET`` (§2.4.2).
    """

    __slots__ = (
        "_base_history",
        "_base_minutes",
        "_current",
        "_reference",
        "cwnd",
        "gain",
        "max_cwnd",
        "min_cwnd",
        "queuing_delay",
        "ssthresh",
        "target_us",
    )

    def __init__(self, config: TransferConfig) -> None:
        self.cwnd = float(config.initial_window_packets)
        self.min_cwnd = float(config.min_window_packets)
        self.max_cwnd = float(config.max_window_packets)
        self.ssthresh = float("inf")
        self.target_us = config.ledbat_target_delay * 1e6
        self.gain = config.ledbat_gain
        self._base_history: deque[int] = deque(maxlen=config.ledbat_base_history)
        self._base_minutes: int | None = None
        self._current: deque[int] = deque(maxlen=config.ledbat_current_filter)
        self._reference: int | None = None
        #: Latest queuing-delay estimate in microseconds (for tests and statistics).
        self.queuing_delay = 0.0

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def _unwrap(self, delay_us: int) -> int:
        """Map a delay modulo 2**32 to a plain integer near the first one seen."""
        if self._reference is None:
            self._reference = delay_us
            return delay_us
        return self._reference + ((delay_us - self._reference + _HALF_U32) % _U32) - _HALF_U32

    def _update_base_delay(self, delay: int, now: float) -> None:
        # RFC 6817 §3.4.2 update_base_delay(): one minimum per minute, BASE_HISTORY kept.
        minute = int(now // 60)
        if self._base_minutes != minute or not self._base_history:
            self._base_minutes = minute
            self._base_history.append(delay)
        elif delay < self._base_history[-1]:
            self._base_history[-1] = delay

    def on_ack(self, newly_acked: int, in_flight: int, now: float, one_way_delay_us: int) -> None:
        delay = self._unwrap(one_way_delay_us)
        self._update_base_delay(delay, now)
        # RFC 6817 §3.4.2 update_current_delay() with FILTER = minimum.
        self._current.append(delay)
        queuing_delay = min(self._current) - min(self._base_history)
        self.queuing_delay = float(queuing_delay)
        if self.cwnd < self.ssthresh and queuing_delay < self.target_us / 2:
            # Slow start while the path shows no queue (RFC 6817 §2.4.2 leaves the start
            # to the implementation; LEDBAT++ does the same): leaves it at half TARGET.
            self.cwnd += newly_acked
        else:
            if self.cwnd < self.ssthresh:
                self.ssthresh = self.cwnd
            # RFC 6817 §2.4.2: cwnd += GAIN * off_target * bytes_newly_acked * MSS / cwnd.
            off_target = (self.target_us - queuing_delay) / self.target_us
            self.cwnd += self.gain * off_target * newly_acked / self.cwnd
        # RFC 6817 §2.4.2: max_allowed_cwnd = flightsize + ALLOWED_INCREASE * MSS.
        allowed = in_flight + newly_acked + 1.0
        if self.cwnd > allowed:
            self.cwnd = max(allowed, self.min_cwnd)
        if self.cwnd < self.min_cwnd:
            self.cwnd = self.min_cwnd
        elif self.cwnd > self.max_cwnd:
            self.cwnd = self.max_cwnd

    def on_congestion(self, now: float) -> None:
        # RFC 6817 §2.4.2: on loss, cwnd = min(cwnd, max(cwnd/2, MIN_CWND * MSS)).
        self.cwnd = min(self.cwnd, max(self.cwnd / 2, self.min_cwnd))
        self.ssthresh = self.cwnd

    def on_timeout(self) -> None:
        # RFC 6817 §2.4.2 defers to RFC 6298 / RFC 5681: restart from the loss window.
        self.ssthresh = max(self.cwnd / 2, self.min_cwnd)
        self.cwnd = self.min_cwnd


CongestionController = NewReno | Ledbat
