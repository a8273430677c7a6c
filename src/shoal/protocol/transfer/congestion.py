"""RTT estimation and the two congestion controllers a transfer can choose.

Windows are counted in packets (full-size data datagrams), as every data datagram of a
flow but the last of each chunk is full size. The engine calls, per flow:

- ``on_ack(newly_acked, in_flight, now, one_way_delay_us)`` for every ACK that
  acknowledged new segments (the delay is the receiver's clock minus our timestamp,
  modulo 2**32: only its changes mean anything);
- ``loss_is_congestion(lost, sent)`` when packets of a new loss episode are declared
  lost (``lost`` and ``sent`` are the flow's recent, exponentially forgotten packet
  counts), then ``on_congestion(now)`` if it says so -- at most once per episode;
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
        """Fold in one RTT measurement.

        Packet numbers are never reused, so every sample is unambiguous and Karn's rule
        (RFC 6298 §3) is met without discarding samples from retransmissions.
        """
        self.latest = rtt
        if rtt < self.min_rtt:
            self.min_rtt = rtt
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

    def probe_timeout(self, max_ack_delay: float) -> float:
        """PTO = SRTT + max(4 * RTTVAR, G) + max_ack_delay (RFC 9002 §6.2.1): when to
        probe for a lost tail, long before the (floored, backed-off) RTO."""
        return self.smoothed + max(4 * self.rttvar, self.GRANULARITY) + max_ack_delay

    @property
    def rto(self) -> float:
        """RTO = SRTT + max(G, 4 * RTTVAR) (RFC 6298 §2.3), backed off (§5.5), clamped."""
        base = self.smoothed + max(self.GRANULARITY, 4 * self.rttvar)
        return min(self.max_rto, max(self.min_rto, base) * self.backoff)


class DelayTracker:
    """Base and current one-way delay, as RFC 6817 §3.4.2 keeps them.

    Base delay: the minimum over ``history`` one-minute buckets (BASE_HISTORY), so a
    route change is forgotten within minutes. Current delay: the minimum of the last
    ``current_filter`` samples (CURRENT_FILTER with FILTER = min). Samples arrive modulo
    2**32 microseconds and are unwrapped around the first one.
    """

    __slots__ = ("_base_history", "_base_minute", "_current", "_reference", "queuing_delay_us")

    def __init__(self, history: int, current_filter: int) -> None:
        self._base_history: deque[int] = deque(maxlen=history)
        self._base_minute: int | None = None
        self._current: deque[int] = deque(maxlen=current_filter)
        self._reference: int | None = None
        #: Latest queuing-delay estimate, microseconds.
        self.queuing_delay_us = 0

    def on_sample(self, one_way_delay_us: int, now: float) -> int:
        """Fold in a delay sample; return the queuing delay (current - base), microseconds."""
        reference = self._reference
        if reference is None:
            reference = self._reference = one_way_delay_us
        delay = reference + ((one_way_delay_us - reference + _HALF_U32) % _U32) - _HALF_U32
        # RFC 6817 §3.4.2 update_base_delay(): one minimum per minute.
        minute = int(now // 60)
        history = self._base_history
        if self._base_minute != minute or not history:
            self._base_minute = minute
            history.append(delay)
        elif delay < history[-1]:
            history[-1] = delay
        # RFC 6817 §3.4.2 update_current_delay().
        self._current.append(delay)
        self.queuing_delay_us = min(self._current) - min(history)
        return self.queuing_delay_us


class NewReno:
    """Foreground congestion control: RFC 5681 slow start and congestion avoidance with
    one reduction per loss episode (RFC 6582 §3.2, RFC 9002 §7.3.2).

    One deliberate departure: a loss episode counts as congestion only when the flow
    recently lost more than ``foreground_loss_tolerance`` of its packets or the one-way
    delay shows a queue of ``foreground_queue_delay``. A congested drop-tail queue shows
    both; random loss on a LAN segment shows neither, and RFC 5681 would otherwise pin a
    5%-loss link to a handful of packets per round trip.
    """

    __slots__ = ("cwnd", "delay", "loss_tolerance", "max_cwnd", "min_cwnd", "queue_us", "ssthresh")

    def __init__(self, config: TransferConfig) -> None:
        self.cwnd = float(config.initial_window_packets)
        self.min_cwnd = float(config.min_window_packets)
        self.max_cwnd = float(config.max_window_packets)
        self.ssthresh = float("inf")
        self.loss_tolerance = config.foreground_loss_tolerance
        self.queue_us = config.foreground_queue_delay * 1e6
        self.delay = DelayTracker(config.ledbat_base_history, config.ledbat_current_filter)

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, newly_acked: int, in_flight: int, now: float, one_way_delay_us: int) -> None:
        # Tracked for loss_is_congestion. Deliberately no delay-based exit from slow
        # start (HyStart++, RFC 9406): a foreground flow that backs off at a few
        # milliseconds of queue never makes a background LEDBAT flow (TARGET 100 ms)
        # give way.
        self.delay.on_sample(one_way_delay_us, now)
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

    def loss_is_congestion(self, lost: float, sent: float) -> bool:
        if self.delay.queuing_delay_us >= self.queue_us:
            return True
        return lost > self.loss_tolerance * sent

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
    (its clock minus the sender's timestamp; the clock offset cancels because only
    differences to the base delay are used, RFC 6817 §3.3). The sender steers the
    queuing delay it causes towards TARGET (§2.4.2) and halves on loss.
    """

    __slots__ = ("cwnd", "delay", "gain", "max_cwnd", "min_cwnd", "ssthresh", "target_us")

    def __init__(self, config: TransferConfig) -> None:
        self.cwnd = float(config.initial_window_packets)
        self.min_cwnd = float(config.min_window_packets)
        self.max_cwnd = float(config.max_window_packets)
        self.ssthresh = float("inf")
        self.target_us = config.ledbat_target_delay * 1e6
        self.gain = config.ledbat_gain
        self.delay = DelayTracker(config.ledbat_base_history, config.ledbat_current_filter)

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    @property
    def queuing_delay(self) -> float:
        """Latest queuing-delay estimate, seconds."""
        return self.delay.queuing_delay_us / 1e6

    def on_ack(self, newly_acked: int, in_flight: int, now: float, one_way_delay_us: int) -> None:
        queuing_delay = self.delay.on_sample(one_way_delay_us, now)
        if self.cwnd < self.ssthresh and queuing_delay < self.target_us / 2:
            # Slow start while the path shows no queue. RFC 6817 §2.4.2 leaves the start
            # to the implementation; LEDBAT++ (draft-irtf-iccrg-ledbat-plus-plus §4.2)
            # slow-starts the same way and leaves slow start at a fraction of TARGET.
            self.cwnd += newly_acked
        else:
            if self.cwnd < self.ssthresh:
                self.ssthresh = self.cwnd
            if queuing_delay <= self.target_us:
                # RFC 6817 §2.4.2: cwnd += GAIN * off_target * bytes_newly_acked * MSS / cwnd.
                off_target = (self.target_us - queuing_delay) / self.target_us
                self.cwnd += self.gain * off_target * newly_acked / self.cwnd
            else:
                # Above TARGET, RFC 6817's linear decrease takes minutes to give way to a
                # loss-based flow that keeps a deep queue full (the "latecomer" problem);
                # LEDBAT++ (draft-irtf-iccrg-ledbat-plus-plus §4.3) decreases in
                # proportion to the window, at most halving it per round trip:
                # W += max(GAIN - W * (delay / TARGET - 1), -W / 2) per RTT.
                excess = queuing_delay / self.target_us - 1.0
                per_rtt = max(self.gain - self.cwnd * excess, -self.cwnd / 2)
                self.cwnd += per_rtt * newly_acked / self.cwnd
        # RFC 6817 §2.4.2: max_allowed_cwnd = flightsize + ALLOWED_INCREASE * MSS.
        allowed = in_flight + newly_acked + 1.0
        if self.cwnd > allowed:
            self.cwnd = allowed
        if self.cwnd < self.min_cwnd:
            self.cwnd = self.min_cwnd
        elif self.cwnd > self.max_cwnd:
            self.cwnd = self.max_cwnd

    def loss_is_congestion(self, lost: float, sent: float) -> bool:
        # RFC 6817 §2.4.2: LEDBAT reacts to every loss episode, as TCP would.
        return True

    def on_congestion(self, now: float) -> None:
        # RFC 6817 §2.4.2: on loss, cwnd = min(cwnd, max(cwnd/2, MIN_CWND * MSS)).
        self.cwnd = min(self.cwnd, max(self.cwnd / 2, self.min_cwnd))
        self.ssthresh = self.cwnd

    def on_timeout(self) -> None:
        # RFC 6817 §2.4.2 defers to RFC 6298 / RFC 5681: restart from the loss window.
        self.ssthresh = max(self.cwnd / 2, self.min_cwnd)
        self.cwnd = self.min_cwnd


CongestionController = NewReno | Ledbat
