"""RTT estimation and the two congestion controllers a transfer can choose.

Windows are counted in packets (full-size data datagrams), as every data datagram of a
flow but the last of each chunk is full size. The engine calls, per flow:

- ``on_ack(newly_acked, in_flight, now, one_way_delay_us, in_recovery)`` for every ACK
  that acknowledged new segments (the delay is the receiver's clock minus our
  timestamp, modulo 2**32: only its changes mean anything; None when the ACK
  acknowledged no packet newer than any before it, so carries no fresh sample;
  ``in_recovery`` while the packets acknowledged were sent before the last reduction);
- ``loss_is_congestion(lost, sent)`` when packets of a new loss episode are declared
  lost (``lost`` and ``sent`` are the flow's recent, exponentially forgotten packet
  counts), then ``on_congestion(now)`` if it says so -- at most once per episode;
- ``on_timeout()`` when the retransmission timer expires twice in a row.
"""

from __future__ import annotations

from collections import deque

from shoal.protocol.transfer.config import TransferConfig
from shoal.protocol.transfer.cubic import BETA as CUBIC_BETA
from shoal.protocol.transfer.cubic import CubicGrowth
from shoal.protocol.transfer.delivery import DeliveryShare

_U32 = 1 << 32
_HALF_U32 = 1 << 31
#: A queuing delay under this fraction of TARGET shows no standing queue: the link
#: has room, and the delay-based controllers grow faster than GAIN per round trip...
_EMPTY_PATH = 0.25
#: ...by a quarter of slow start's rate, as HyStart++'s conservative slow start
#: (RFC 9406 §4.3, CSS_GROWTH_DIVISOR = 4). LEDBAT's one packet per round trip takes
#: minutes to refill a 200 ms path after a slowdown or a competitor's departure.
_CSS_GROWTH_DIVISOR = 8
#: Seconds over which a foreground flow remembers the most it carried (DelayReno).
_RATE_WINDOW = 10.0
#: A drop-tail buffer overflows when it is full: a loss in delay mode is congestion when
#: the queue is at least this share of the highest it showed in the last _PEAK_WINDOW
#: seconds (DelayReno.loss_is_congestion); well below it, the buffer had room.
_AT_PEAK = 0.75
_PEAK_WINDOW = 3.0
#: A background flow that carries at least this share of the most it carried lately is
#: taken to be alone (rate noise, a loss): it aims at the whole TARGET; below it, at
#: TARGET x share / _SHARE_ALONE, never under the queue that shows an empty path
#: (``_EMPTY_PATH`` x TARGET), so that it always sees a competitor leave (``Ledbat.aim_us``).
_SHARE_ALONE = 0.8


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

    def on_sample(self, one_way_delay_us: int | None, now: float) -> int:
        """Fold in a delay sample; return the queuing delay (current - base), microseconds.
        None (an ACK with no fresh sample) leaves the estimate as it was."""
        if one_way_delay_us is None:
            return self.queuing_delay_us
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

    @property
    def base_delay_us(self) -> int:
        """The base delay (unwrapped, microseconds; 0 before the first sample)."""
        return min(self._base_history) if self._base_history else 0


class _DelayWindow:
    """What both controllers keep: a window in packets within its bounds, slow start's
    threshold, and the path's queuing delay (``DelayTracker``)."""

    __slots__ = ("cwnd", "delay", "max_cwnd", "min_cwnd", "ssthresh")

    def __init__(self, config: TransferConfig) -> None:
        self.cwnd = float(config.initial_window_packets)
        self.min_cwnd = float(config.min_window_packets)
        self.max_cwnd = float(config.max_window_packets)
        self.ssthresh = float("inf")
        self.delay = DelayTracker(config.ledbat_base_history, config.ledbat_current_filter)

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    @property
    def queuing_delay(self) -> float:
        """Latest queuing-delay estimate, seconds."""
        return self.delay.queuing_delay_us / 1e6


class DelayReno(_DelayWindow):
    """Foreground congestion control: a short queue when alone, CUBIC against TCP.

    Theory of operation. A foreground transfer must fill the link, must not fill a deep
    buffer (control traffic and the users' own flows then wait behind it), and must
    share with a loss-based TCP flow as another TCP flow would. It has two modes:

    - *Delay* (the start, and whenever the path shows it is ours): slow start until the
      queuing delay reaches half of TARGET (``foreground_target_delay``), then the
      LEDBAT++ window update (draft-irtf-iccrg-ledbat-plus-plus §4.3: additive increase
      in proportion to how far below TARGET, multiplicative decrease above it, at most
      a halving per round trip) that holds the queue near TARGET -- a few tens of
      milliseconds instead of a full buffer.
    - *Competing*: when the queue stays above twice TARGET for ``foreground_compete_after``
      seconds, however far the window went down, somebody else keeps it full (a
      loss-based flow: a delay-based flow yielding to it would starve; LEDBAT++ §4.4
      and Copa's "competitive mode" meet the same problem). The window then follows
      CUBIC (RFC 9438, ``cubic.py``; one reduction per loss episode: RFC 6582 §3.2,
      RFC 9002 §7.3.2), as Linux's TCP does, from the window that carries the rate it
      had alone at the round trip the competitor's queue now makes (a TCP flow that
      had the link held that much: it filled the buffer alone). NewReno from half its
      window got 3% of the link beside a CUBIC flow behind a deep buffer: its packet
      per (600 ms) round trip is no match for CUBIC's clock. Every
      ``foreground_probe_interval`` seconds it
      slows down to the minimum window for about one queue-drain time (the periodic
      slowdown of LEDBAT++ §4.4, used here to look for the competitor): if the queue
      drains meanwhile, the competitor has left and the flow goes back to delay mode;
      otherwise it restores its window at once.

    A loss episode counts as congestion when the flow recently lost more than
    ``foreground_loss_tolerance`` of its packets, or when the queue is at least
    ``foreground_queue_delay`` and, in delay mode, near the highest it showed lately
    (``_AT_PEAK``: a drop-tail buffer overflows when full). Random loss on a LAN
    segment or a WiFi link shows neither, and RFC 5681 would otherwise pin a 5%-loss
    link to a handful of packets per round trip. Held at TARGET, a queue above
    ``foreground_queue_delay`` is the flow's own equilibrium, not a full buffer: taken
    for congestion there, every random loss halved the window (1% loss on each link
    of an office kept its flows at a fraction of the link).
    """

    __slots__ = (
        "above_since",
        "compete_after",
        "competing",
        "cubic",
        "gain",
        "initial_cwnd",
        "loss_tolerance",
        "max_start_cwnd",
        "next_probe",
        "onset_cwnd",
        "paced_start_rate",
        "probe_cwnd",
        "probe_interval",
        "probe_until",
        "probes",
        "queue_peak_time",
        "queue_peak_us",
        "queue_us",
        "rate_at_rest",
        "rate_at_rest_time",
        "target_us",
    )

    def __init__(self, config: TransferConfig) -> None:
        super().__init__(config)
        self.initial_cwnd = self.cwnd
        self.paced_start_rate = config.paced_start_rate
        self.max_start_cwnd = float(config.paced_initial_window_packets)
        self.loss_tolerance = config.foreground_loss_tolerance
        self.queue_us = config.foreground_queue_delay * 1e6
        self.target_us = config.foreground_target_delay * 1e6
        self.gain = config.foreground_gain
        self.compete_after = config.foreground_compete_after
        self.probe_interval = config.foreground_probe_interval
        self.competing = False
        #: Window growth while competing (RFC 9438).
        self.cubic = CubicGrowth()
        #: Since when the queuing delay has stayed at or above 2 TARGET (None: below).
        self.above_since: float | None = None
        self.onset_cwnd = 0.0
        #: Packets per second the flow carried with the queue at or under TARGET.
        self.rate_at_rest = 0.0
        self.rate_at_rest_time = 0.0
        self.next_probe = float("inf")
        #: End of the slowdown in progress (None: none), and the window to restore.
        self.probe_until: float | None = None
        self.probe_cwnd = 0.0
        self.probes = 0
        #: The highest queuing delay of the last _PEAK_WINDOW seconds (a loss near it is
        #: a full buffer's), and when it was seen.
        self.queue_peak_us = 0
        self.queue_peak_time = float("-inf")

    def on_first_rtt(self, rtt: float) -> None:
        """The flow's first RTT sample: a window paced over the round trip may start
        larger than RFC 6928's, as long as nothing has moved it yet (``paced_start_rate``
        in ``TransferConfig``)."""
        if self.cwnd == self.initial_cwnd and self.ssthresh == float("inf"):
            start = min(self.paced_start_rate * rtt, self.max_start_cwnd)
            self.cwnd = max(self.cwnd, float(int(start)))

    def on_path_raised(self, packets: float) -> None:
        """The path's known share grew to ``packets`` a round trip (other flows on the
        link the administrator described ended): in delay mode the window grows to it
        at once (paced, ``Pacer``), instead of a packet per round trip, so the flows
        left fill the link. Its own delay and loss signals rule from there."""
        if not self.competing and self.probe_until is None:
            self.cwnd = max(self.cwnd, min(float(int(packets)), self.max_cwnd))

    def on_known_path(self, packets: float) -> None:
        """The path is known to carry ``packets`` a round trip for this flow (its share
        of a link the administrator described): a window still in its first slow start
        grows to that at once, paced over the round trip (``Pacer``), never a burst.
        Once the flow has left slow start it is what its own signals made it."""
        if self.ssthresh == float("inf") and not self.competing:
            self.cwnd = max(self.cwnd, min(float(int(packets)), self.max_cwnd))

    def on_ack(
        self, newly_acked: int, in_flight: int, now: float, one_way_delay_us: int | None,
        in_recovery: bool = False, srtt: float = 0.0,
    ) -> None:  # fmt: skip
        queuing_delay = self.delay.on_sample(one_way_delay_us, now)
        if queuing_delay >= self.queue_peak_us or now - self.queue_peak_time > _PEAK_WINDOW:
            self.queue_peak_us = queuing_delay
            self.queue_peak_time = now
        target = self.target_us
        # This flow's own equilibrium is TARGET * (1 + GAIN / W) (LEDBAT++ §4.3 update at
        # rest), under twice TARGET; a queue held above that is not this flow's doing.
        if queuing_delay < 2 * target:
            self.above_since = None
            if queuing_delay < 1.5 * target and not self.competing:
                self.onset_cwnd = self.cwnd  # the window while the queue was its own
                if queuing_delay <= target and srtt > 0:
                    # ...and the most it carried lately at or under TARGET (above it
                    # the window backs off): a windowed maximum, as BBR's bandwidth
                    # filter, so that a slowdown before the onset does not count.
                    rate = self.cwnd / srtt
                    if rate >= self.rate_at_rest or now - self.rate_at_rest_time > _RATE_WINDOW:
                        self.rate_at_rest = rate
                        self.rate_at_rest_time = now
        elif self.above_since is None:
            self.above_since = now
        if self.probe_until is not None:
            self._during_probe(queuing_delay, now)
            return
        if self.competing:
            if now >= self.next_probe and not in_recovery:
                # LEDBAT++ §4.4 slowdown: let the queue drain if it is ours alone; wait
                # for as long as the queue takes to drain, and a round trip's worth.
                self.probes += 1
                self.probe_cwnd = self.cwnd
                self.cwnd = self.min_cwnd
                self.probe_until = now + 1.5 * queuing_delay / 1e6 + 0.25
                return
            if in_recovery or in_flight + newly_acked < self.cwnd / 2:
                return  # RFC 6582 §3.2; RFC 7661 §4.3: no growth of an unused window
            if self.cwnd < self.ssthresh:
                self.cwnd += newly_acked  # RFC 9438 §4.10 / RFC 5681 §3.1 slow start
            else:
                self.cwnd = self.cubic.grow(self.cwnd, newly_acked, now, srtt)
            self.cwnd = min(self.cwnd, self.max_cwnd)
            return
        if self.above_since is not None and now - self.above_since >= self.compete_after:
            # The queue stayed above TARGET while this flow kept backing off: it is not
            # ours. Compete for it as TCP's congestion avoidance does (RFC 5681 §3.1),
            # from a window it had: no slow start into a queue that is already full,
            # which would take the link from the users' flow (issue 9's target is that
            # their TCP flow keeps what it would keep beside another TCP flow).
            self.competing = True
            # As if the competitor's arrival had been one CUBIC reduction of the window
            # it had while the queue was its own (RFC 9438 §4.6), not what backing off
            # left: W_max is that window, and growth resumes from BETA x W_max.
            # That window filled the link at the round trip of the time; the queue the
            # competitor keeps has since made the round trip longer, and the window
            # that carries the same rate larger in proportion -- what a TCP flow that
            # had the link to itself would hold (it filled the buffer alone).
            w_max = min(max(self.onset_cwnd, self.rate_at_rest * srtt), self.max_cwnd)
            self.cubic.start_from(w_max)
            self.cwnd = self.ssthresh = max(self.cwnd, w_max * CUBIC_BETA)
            self.next_probe = now + self.probe_interval
            return
        if in_recovery:
            return
        if self.cwnd < self.ssthresh and queuing_delay < target / 2:
            # Slow start while the path shows no queue (LEDBAT++ §4.2 leaves slow start
            # at a fraction of TARGET too).
            if in_flight + newly_acked >= self.cwnd / 2:
                self.cwnd += newly_acked
        else:
            if self.cwnd < self.ssthresh:
                self.ssthresh = self.cwnd
            if queuing_delay <= target:
                if in_flight + newly_acked >= self.cwnd / 2:  # RFC 7661 §4.3
                    off_target = (target - queuing_delay) / target
                    self.cwnd += self.gain * off_target * newly_acked / self.cwnd
                    if queuing_delay < target * _EMPTY_PATH:
                        self.cwnd += newly_acked / _CSS_GROWTH_DIVISOR
            else:
                # LEDBAT++ §4.3: W += max(GAIN - W * (delay / TARGET - 1), -W / 2) per RTT.
                excess = queuing_delay / target - 1.0
                per_rtt = max(self.gain - self.cwnd * excess, -self.cwnd / 2)
                self.cwnd += per_rtt * newly_acked / self.cwnd
        if self.cwnd < self.min_cwnd:
            self.cwnd = self.min_cwnd
        elif self.cwnd > self.max_cwnd:
            self.cwnd = self.max_cwnd

    def _during_probe(self, queuing_delay: int, now: float) -> None:
        assert self.probe_until is not None
        if queuing_delay < self.target_us:
            # The queue drained while this flow held back: nobody else keeps it full.
            self.competing = False
            self.probe_until = None
            self.next_probe = float("inf")
            self.cwnd = max(self.probe_cwnd / 2, self.min_cwnd)
            self.ssthresh = self.cwnd
        elif now >= self.probe_until:
            # Still a queue: the competitor is there. Take the window back at once.
            self.probe_until = None
            self.cwnd = self.probe_cwnd
            self.next_probe = now + self.probe_interval

    def loss_is_congestion(self, lost: float, sent: float) -> bool:
        queue = self.delay.queuing_delay_us
        if queue >= self.queue_us and (self.competing or queue >= _AT_PEAK * self.queue_peak_us):
            return True
        return lost > self.loss_tolerance * sent

    def on_congestion(self, now: float) -> None:
        if self.probe_until is not None:
            return  # the window is already at its minimum
        if self.competing:
            # RFC 9438 §4.6: CUBIC's reduction to BETA, once per episode.
            self.ssthresh = max(self.cubic.reduce(self.cwnd), self.min_cwnd)
        else:
            # RFC 5681 §3.1 eq. (4) / RFC 6582 §3.2 step 2: halve once per episode.
            self.ssthresh = max(self.cwnd / 2, self.min_cwnd)
        self.cwnd = self.ssthresh

    def on_timeout(self) -> None:
        # RFC 5681 §3.1: after an RTO the window restarts from the loss window.
        if self.probe_until is not None:
            self.probe_until = None
            self.cwnd = self.probe_cwnd
            self.next_probe = float("inf") if not self.competing else self.next_probe
        if self.competing:
            self.ssthresh = max(self.cubic.reduce(self.cwnd), self.min_cwnd)
        else:
            self.ssthresh = max(self.cwnd / 2, self.min_cwnd)
        self.cwnd = self.min_cwnd


class Ledbat(_DelayWindow):
    """Background congestion control, RFC 6817 (LEDBAT).

    The receiver reports, in every ACK, the least one-way delay of the data packets
    since its last ACK (its clock minus the sender's timestamp; the clock offset
    cancels because only differences to the base delay are used, RFC 6817 §3.3). The
    sender steers the queuing delay it causes towards TARGET (§2.4.2) and halves on loss.

    A competitor that keeps less queue than TARGET (BBR, or a window-limited flow)
    would never make it give way: the TARGET it aims at shrinks with the share of
    the link it still carries (``delivery.DeliveryShare``), so that beside such a flow
    it backs off, carries less, aims lower, and backs off again until the competitor's
    own queue is above its aim. Alone (a share of ``_SHARE_ALONE`` or more) it aims at
    the whole TARGET; when the competitor leaves, the queue empties, it refills the
    path as on any empty path and its aim grows back with its rate.
    """

    __slots__ = ("gain", "share", "target_us")

    def __init__(self, config: TransferConfig) -> None:
        super().__init__(config)
        self.target_us = config.ledbat_target_delay * 1e6
        self.gain = config.ledbat_gain
        self.share = DeliveryShare(config.ledbat_base_history)

    @property
    def aim_us(self) -> float:
        """The queuing delay it steers towards now: TARGET, lower beside a competitor."""
        fraction = min(1.0, self.share.share / _SHARE_ALONE)
        return self.target_us * max(fraction, _EMPTY_PATH)

    def on_ack(
        self, newly_acked: int, in_flight: int, now: float, one_way_delay_us: int | None,
        in_recovery: bool = False, srtt: float = 0.0,
    ) -> None:  # fmt: skip
        queuing_delay = self.delay.on_sample(one_way_delay_us, now)
        self.share.on_ack(newly_acked, in_flight + newly_acked >= self.cwnd / 2, now, srtt)
        target = self.aim_us
        before = self.cwnd
        if self.cwnd < self.ssthresh and queuing_delay < target / 2:
            # Slow start while the path shows no queue. RFC 6817 §2.4.2 leaves the start
            # to the implementation; LEDBAT++ (draft-irtf-iccrg-ledbat-plus-plus §4.2)
            # slow-starts the same way and leaves slow start at a fraction of TARGET.
            self.cwnd += newly_acked
        else:
            if self.cwnd < self.ssthresh:
                self.ssthresh = self.cwnd
            if queuing_delay <= target:
                # RFC 6817 §2.4.2: cwnd += GAIN * off_target * bytes_newly_acked * MSS / cwnd.
                off_target = (target - queuing_delay) / target
                self.cwnd += self.gain * off_target * newly_acked / self.cwnd
                # An empty path by the whole TARGET: a competitor that left is seen.
                if queuing_delay < self.target_us * _EMPTY_PATH:
                    self.cwnd += newly_acked / _CSS_GROWTH_DIVISOR
            else:
                # Above TARGET, RFC 6817's linear decrease takes minutes to give way to a
                # loss-based flow that keeps a deep queue full (the "latecomer" problem);
                # LEDBAT++ (draft-irtf-iccrg-ledbat-plus-plus §4.3) decreases in
                # proportion to the window, at most halving it per round trip:
                # W += max(GAIN - W * (delay / TARGET - 1), -W / 2) per RTT.
                excess = queuing_delay / target - 1.0
                per_rtt = max(self.gain - self.cwnd * excess, -self.cwnd / 2)
                self.cwnd += per_rtt * newly_acked / self.cwnd
        # RFC 6817 §2.4.2: max_allowed_cwnd = flightsize + ALLOWED_INCREASE * MSS, with
        # flightsize before this ACK. The RFC assumes an ACK per packet; an ACK here
        # covers up to ``ack_every_packets``, so the increase allowed is per packet it
        # acknowledges -- one per ACK would cap slow start at 1/16 of a doubling per
        # round trip, and leave a 200 ms path half empty. It bounds the window's
        # growth, never cuts it (RFC 7661: a window not in use is kept, not reduced):
        # a busy sender reads a batch of ACKs before sending anything, and the flight
        # its last ACK leaves says nothing about the path -- cut to it, a 50-packet
        # window fell to 2-30 several times a second and the lab's 50 Mbit/s link ran dry.
        allowed = in_flight + newly_acked + max(1.0, float(newly_acked))
        if self.cwnd > before and self.cwnd > allowed:
            self.cwnd = max(before, allowed)
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


CongestionController = DelayReno | Ledbat
