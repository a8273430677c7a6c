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
        "cc",
        "in_flight",
        "key",
        "known_rate",
        "last_ack_time",
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

    def on_sent(self, sent: int) -> None:
        """``sent`` more packets are in flight (and count towards the loss rate)."""
        self.in_flight += sent
        recent_sent = self.recent_sent + sent
        if recent_sent > LOSS_MEMORY:
            recent_sent /= 2
            self.recent_lost /= 2
        self.recent_sent = recent_sent
