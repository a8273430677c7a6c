"""A flow: the congestion state shared by every chunk sent to one peer in one mode.

Each (peer, mode) pair has its own RTT estimator (RFC 6298), congestion controller
(``DelayReno`` in the foreground, LEDBAT in the background), pacer, and the loss
bookkeeping recovery needs across chunks: packets in flight, the start of the current
recovery episode, the recent loss rate, the reordering tolerance and the window to
restore if a reduction proves spurious. The flow sends its oldest chunk first, so
chunks finish in order and each one's packets stay dense.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.protocol.transfer.config import TransferConfig
from shoal.protocol.transfer.congestion import DelayReno, Ledbat, RttEstimator
from shoal.protocol.transfer.events import Address
from shoal.protocol.transfer.pacer import Pacer
from shoal.wire.messages import Mode

if TYPE_CHECKING:
    from shoal.protocol.transfer.upload import Upload

#: RFC 9002 §6.1.1 kPacketThreshold.
PACKET_THRESHOLD = 3
#: Packets over which a flow's recent loss rate is measured (halved when exceeded).
LOSS_MEMORY = 2000


class Flow:
    """Congestion state shared by every chunk we send to one peer in one mode."""

    __slots__ = (
        "_pacing_gain",
        "cc",
        "changes",
        "held",
        "held_full",
        "in_flight",
        "key",
        "known_rate",
        "last_ack_time",
        "lost_at_share",
        "paced",
        "pacer",
        "packet_threshold",
        "recent_lost",
        "recent_sent",
        "recovery_start",
        "rtt",
        "undo_cwnd",
        "undo_ssthresh",
        "uploads",
    )

    def __init__(self, key: tuple[Address, Mode], config: TransferConfig, now: float) -> None:
        self.key = key
        self._pacing_gain = config.pacing_gain
        self.cc: DelayReno | Ledbat = (
            Ledbat(config) if key[1] is Mode.BACKGROUND else DelayReno(config)
        )
        self.rtt = RttEstimator(config.initial_rtt, config.min_rto, config.max_rto)
        self.in_flight = 0
        self.pacer = Pacer(config, now)
        self.recovery_start = float("-inf")
        self.last_ack_time = now
        # Packets sent and declared lost lately (exponentially forgotten every
        # LOSS_MEMORY packets), for the foreground loss tolerance. The prior of
        # LOSS_MEMORY / 4 clean packets keeps one early loss from looking like 100%.
        self.recent_sent = LOSS_MEMORY / 4
        self.recent_lost = 0.0
        # RFC 9002 §6.1.1 starts at 3; raised when the path proves to reorder (RACK-like).
        self.packet_threshold = PACKET_THRESHOLD
        # Window before the last reduction, restored if that loss proves spurious.
        self.undo_cwnd: float | None = None
        self.undo_ssthresh = 0.0
        self.uploads: list[Upload] = []
        #: Packets a second the path is known to carry for this flow (``know_path``).
        self.known_rate: float | None = None
        #: A loss episode ended the flow's window while its share was known: the link's
        #: queue does not hold more than the share, which then caps it (``Pacer``).
        self.lost_at_share = False
        #: Asking the flow what it may send would send nothing, and change nothing,
        #: until it changes (``Sender.flow_changed``: an ACK, a timeout, a new or an
        #: ended chunk, a path's rate): its window is full, or it has no data to send
        #: and a full pacer (``held_full``: the asks it skips would each have set
        #: ``pacer.last_refill``, which is set on release instead).
        self.held = False
        self.held_full = False
        #: Its pacer held it back and nothing changed since: it is asked cheaply
        #: (``Pacer.refill_held``) until a token accrues.
        self.paced = False
        #: How often the flow changed (a change during its own send step is seen).
        self.changes = 0

    def on_rtt_sample(self, seconds: float) -> None:
        """Fold in an RTT measurement; the first lets a foreground window start paced
        (``DelayReno.on_first_rtt``)."""
        first = self.rtt.srtt is None
        self.rtt.on_sample(seconds)
        if first and isinstance(self.cc, DelayReno):
            self.cc.on_first_rtt(seconds)
            if self.known_rate is not None:
                self.cc.on_known_path(self.known_rate * seconds)

    def know_path(self, packets_per_second: float) -> None:
        """The application knows what the path carries for this flow (a WAN link's
        share): a foreground flow's first slow start starts there (``on_known_path``)
        as soon as it has a round trip to size the window by. A known rate raised
        later (other flows on that link ended) lifts the window to it at once, in
        delay mode (``on_path_raised``)."""
        raised = self.known_rate is not None and packets_per_second > self.known_rate
        self.known_rate = packets_per_second
        srtt = self.rtt.srtt
        if srtt is not None and isinstance(self.cc, DelayReno):
            if raised:
                self.cc.on_path_raised(packets_per_second * srtt)
            else:
                self.cc.on_known_path(packets_per_second * srtt)

    def hold_growth_at_known_rate(self, window_before: float) -> None:
        """A flow paced at its known share (``rate_cap``) grows its window no further
        than that share carries in a round trip (x ``pacing_gain``): more would never
        be used, as the pacer holds the flow at the share, and a window inflated above
        it would have to halve more than once before a loss or a queue slowed the flow
        (RFC 7661 §4.3: no growth of a window not in use). Never a cut."""
        srtt = self.rtt.srtt
        if not self.lost_at_share or self.known_rate is None or srtt is None:
            return
        if self.cc.cwnd <= window_before:
            return
        ceiling = self.known_rate * srtt * self._pacing_gain
        self.cc.cwnd = max(window_before, min(self.cc.cwnd, ceiling))

    @property
    def rate_cap(self) -> float | None:
        """Packets a second the pacer keeps the flow under (None: no cap)."""
        return self.known_rate if self.lost_at_share else None

    def on_sent(self, sent: int) -> None:
        """``sent`` more packets are in flight (and count towards the loss rate)."""
        self.in_flight += sent
        recent_sent = self.recent_sent + sent
        if recent_sent > LOSS_MEMORY:
            recent_sent /= 2
            self.recent_lost /= 2
        self.recent_sent = recent_sent
