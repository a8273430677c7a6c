"""The pacer: how many packets a flow may send now, and when it may send again.

A token bucket filled at ``gain x cwnd / srtt`` packets a second (the pacing gain is
higher in slow start, so the window can still double per round trip), holding at most a
burst's worth. A burst is what the rate allows in ``pacing_burst_seconds`` (as Linux
sizes TSO bursts to about 1 ms of the pacing rate), between ``_MIN_BURST`` and
``pacing_burst_packets``: a slow flow's burst would otherwise queue up behind itself at
the bottleneck, show as delay, and end a delay-based slow start early. Before the first
RTT sample there is no rate: a full burst may go, limited by the window alone.

A flow its pacer held back and that is asked later than the deadline the pacer set
(its process waited for a CPU: the deadline passed while another process ran) may also
send what accrued since that deadline, up to ``pacing_burst_packets``: on a busy host
a bucket capped at 2 ms of the rate threw those tokens away at every late wake-up,
so a flow carried at most its small burst per scheduling delay (a 4-packet burst per
10 ms wait is 4.5 Mbit/s), and woke up several times as often for the same bytes. A
host that wakes on time sends the same bursts as before (the simulator's hosts never
wait: its reports are unchanged). docs/network.md, "multi-office on a busy host".

A flow the pacer holds back asks to be woken when ``pacing_wake_seconds`` of its rate
has accrued (at least one packet, at most a burst), not as soon as one packet may go:
every wake-up costs the shell a pass through its event loop (tens of microseconds in
Python), and a wake-up per packet or two made a fast flow's sender spin, its loop's own
cost setting the batch (about 10 CPU-s per GB at 500 Mbit/s, docs/network.md). Linux
sizes its TSO bursts to about a millisecond of the pacing rate for the same reason.

A flow whose share of a described link is known (the server's flows into an office
with a link profile, ``Flow.know_path``) and that has lost packets in a loss episode
since is paced at that share at most (``Flow.rate_cap``): the link's queue is then
known not to hold what the flows send above their shares. Where the WAN's queue is
short and its round trip long (20 ms behind 200 ms, the simulator's cell 19) the
stripes' six flows, paced at 1.25 x their windows, overran it again and again: each
overrun lost packets and halved every flow's window, which then took several long round
trips to grow back (the WAN 72% busy over the copy). The window still rules below the
share: loss and queue slow the flow as before, and the window grows no further than
the share carries in a round trip (``Flow.hold_growth_at_known_rate``). A flow that has
lost nothing is not capped: a deep queue absorbs what it sends over its share, and the
delay the queue adds keeps its probe timeouts wide of the holders' ACK delays (capped
from the start, the server sent three times as many tail-loss probes for chunks not
lost, up to 0.007 F more over the WAN in the deep-queued cells).
"""

from __future__ import annotations

from shoal.protocol.transfer.config import TransferConfig

#: Fewest packets the pacer lets go back to back.
_MIN_BURST = 4


class Pacer:
    """Token bucket of one flow (see the module docstring)."""

    __slots__ = (
        "_config",
        "_rate",
        "_tokens",
        "_wake",
        "burst",
        "last_refill",
        "tokens",
        "wait_until",
    )

    def __init__(self, config: TransferConfig, now: float) -> None:
        self._config = config
        self.tokens = float(config.pacing_burst_packets)
        self.last_refill = now
        #: When the flow may send its next packet, if it is waiting for tokens.
        self.wait_until: float | None = None
        #: The most tokens the bucket held at the last ``budget``: a bucket that full
        #: stays so (``Sender.send_flows`` need not ask a flow with nothing to send).
        self.burst = float(config.pacing_burst_packets)
        self._rate = 0.0
        self._tokens = 0.0
        self._wake = 1.0

    def budget(
        self,
        now: float,
        room: int,
        cwnd: float,
        srtt: float | None,
        in_slow_start: bool,
        known_rate: float | None = None,
    ) -> int:
        """Packets that may go now, with ``room`` left in the congestion window, never
        faster than ``known_rate`` packets a second where given (``Flow.rate_cap``)."""
        config = self._config
        burst = config.pacing_burst_packets
        if srtt is None:
            tokens = float(burst)
            rate = 0.0
        else:
            gain = config.pacing_gain_slow_start if in_slow_start else config.pacing_gain
            rate = gain * cwnd / max(srtt, 1e-6)
            if known_rate is not None and rate > known_rate:
                rate = known_rate
            rate_burst = rate * config.pacing_burst_seconds
            if rate_burst < burst:
                burst = max(_MIN_BURST, int(rate_burst))
                wait_until = self.wait_until
                if wait_until is not None and now > wait_until:
                    # Asked late for a deadline its pacer set: what accrued since is
                    # the host's delay, not the flow's burst (the module docstring).
                    late = int((now - wait_until) * rate)
                    burst = min(config.pacing_burst_packets, burst + late)
            tokens = self.tokens + (now - self.last_refill) * rate
            if tokens > burst:
                tokens = float(burst)
            wake = rate * config.pacing_wake_seconds
            self._wake = 1.0 if wake < 1.0 else float(burst) if wake > burst else wake
        self.last_refill = now
        self.burst = burst
        self._rate = rate
        self._tokens = tokens
        return min(room, int(tokens))

    def refill_held(self, now: float) -> float | None:
        """Asked again after it held its flow back, at the same rate (nothing about the
        flow changed since): with no whole token yet, do what ``budget`` and ``on_sent``
        of nothing would (the same float operations: refill at ``now``, then
        ``wait_until``) and return the new ``wait_until``; None when a token has
        accrued (ask the flow in full)."""
        rate = self._rate
        tokens = self.tokens + (now - self.last_refill) * rate
        if tokens >= 1.0:
            return None
        self.last_refill = now
        self._tokens = self.tokens = tokens
        wake = self.wait_until = now + max((self._wake - tokens) / rate, 1e-6)
        return wake

    def on_sent(self, now: float, sent: int, budget: int, room: int) -> None:
        """``sent`` packets of the ``budget`` went: spend their tokens, and if the pacer,
        not the window or the data, held the flow back, say when to come back: once a
        wake-up's worth of packets may go (the module docstring)."""
        rate = self._rate
        self.tokens = self._tokens - sent
        if rate and sent == budget and budget < room:
            # At least a microsecond later, so float rounding cannot make it "now".
            self.wait_until = now + max((self._wake - self.tokens) / rate, 1e-6)
        else:
            self.wait_until = None
