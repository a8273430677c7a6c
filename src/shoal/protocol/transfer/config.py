"""Tunables of the transfer engine, with the reason for each default."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core.chunking import MAX_CHUNK_SIZE
from shoal.wire.messages import DATA_HEADER_SIZE, MAX_DATAGRAM_SIZE
from shoal.wire.messages import MAX_ACK_RANGES as WIRE_MAX_ACK_RANGES


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """Configuration of one ``TransferEngine``; every field has a working default."""

    #: Largest UDP payload we send. 1400 fits Ethernet (1500) after IPv6/UDP headers and a
    #: tunnel or two, so nothing is ever IP-fragmented.
    max_datagram_size: int = 1400
    #: Acknowledge after this many data packets...
    ack_every_packets: int = 16
    #: ...or this long after the first unacknowledged one (RFC 9000 §13.2.1 uses 25 ms;
    #: a LAN wants the sender to learn sooner).
    max_ack_delay: float = 0.002
    #: Segments beyond the cumulative point a sender may have outstanding per transfer.
    receive_window_packets: int = 2048
    #: Congestion window at the start of a flow, in packets (RFC 6928 uses 10). Until
    #: the flow has an RTT sample the pacer has no rate, so this is also the most it
    #: sends back to back before its first acknowledgement.
    initial_window_packets: int = 10
    #: Foreground: at its first RTT sample (an earlier blob or chunk, or its first
    #: acknowledgement) a flow's window becomes what ``paced_start_rate`` packets a
    #: second carry in that round trip, at least ``initial_window_packets`` and at most
    #: ``paced_initial_window_packets``, paced over the round trip (``Pacer``), never a
    #: burst. Slow start from 10 packets takes five round trips for a 256 KiB chunk
    #: (0.5 s on a 100 ms WAN, issue 9); from 32, three. A short path is left at 10:
    #: its slow start is short anyway (no gain measured there), and on a slow uplink a
    #: larger start adds queue in front of the client's own requests and ACKs.
    #: 500 packets/s is 10 packets per 20 ms (about 5.7 Mbit/s); 32 packets (45 KB) is
    #: the pacer's largest burst, what a flow may send back to back at any time.
    #: Background flows keep ``initial_window_packets`` (LEDBAT). A flow whose path the
    #: application knows (``send_chunk``'s ``path_rate``) starts at that rate instead.
    paced_start_rate: float = 500.0
    paced_initial_window_packets: int = 32
    #: Smallest congestion window, in packets (RFC 5681 §3.1 loss window, 2 for acks).
    min_window_packets: int = 2
    #: Largest congestion window, in packets (bounds in-flight state per flow).
    max_window_packets: int = 8192
    #: RTT assumed before the first sample (RFC 6298 §2.1 says 1 s; this is a LAN).
    initial_rtt: float = 0.1
    #: RFC 6298 §2.4 rounds the RTO up to 1 s; on a LAN that wastes seconds per loss
    #: burst, so shoal uses a smaller floor as RFC 6298 §4 allows for known paths.
    min_rto: float = 0.01
    max_rto: float = 2.0
    #: A peer silent for this long ends its transfers with ``TransferTimedOut``.
    idle_timeout: float = 5.0
    #: A timer that fires this much after its deadline says this process did not run
    #: meanwhile (a CPU-starved host, a suspended VM), and what peers sent in that gap
    #: may still wait, unread, in the socket. That time, and ``stall_grace`` for the
    #: shell to read the socket, is then no peer's silence: every transfer counts as
    #: heard that much later. Else a transfer still making progress is abandoned and
    #: asked for again from scratch (a second copy of the chunk over the WAN) because
    #: *we* could not listen. Only our own lateness extends it, never anything a peer
    #: sends, by at most our own stall (docs/security.md, "stalling peer").
    stall_threshold: float = 0.5
    stall_grace: float = 0.5
    #: Packets sent back to back before the pacer makes the sender wait...
    pacing_burst_packets: int = 32
    #: ...or fewer: what the pacing rate allows in this long (at least 4 packets).
    pacing_burst_seconds: float = 0.002
    #: A flow the pacer holds back is woken when this much of its rate may go (at
    #: least one packet, at most a burst), not for each packet (``pacer``).
    pacing_wake_seconds: float = 0.0005
    #: Pacing rate = gain * cwnd / srtt (Linux uses 2 in slow start, 1.25 after).
    pacing_gain_slow_start: float = 2.0
    pacing_gain: float = 1.25
    #: LEDBAT target queuing delay (RFC 6817 §2.4.2 TARGET; at most 100 ms, §3.2). Below
    #: the foreground's target (``foreground_target_delay``): a background transfer
    #: must give way to a foreground one, which holds the queue at its own target.
    ledbat_target_delay: float = 0.01
    #: LEDBAT GAIN (RFC 6817 §2.4.2: at most 1).
    ledbat_gain: float = 1.0
    #: Minutes of base-delay history (RFC 6817 §3.4.2 BASE_HISTORY = 10).
    ledbat_base_history: int = 10
    #: Samples in the current-delay filter (RFC 6817 §3.4.2 CURRENT_FILTER).
    ledbat_current_filter: int = 4
    #: Foreground: a loss episode halves the window only when more than this fraction of
    #: the round's packets were lost, or the path shows a queue (below). Random loss on a
    #: LAN (Wi-Fi, a bad cable) is not congestion; RFC 5681 assumes it is, and would hold
    #: a 5%-loss LAN link to a few packets per round trip.
    foreground_loss_tolerance: float = 0.1
    #: Foreground: queuing delay (one-way delay above its base) that marks congestion.
    foreground_queue_delay: float = 0.01
    #: Foreground: the queuing delay a transfer holds the path at when it is alone (the
    #: LEDBAT++ TARGET, draft-irtf-iccrg-ledbat-plus-plus §4.1, for the foreground): far
    #: below a deep buffer, far above the scheduling noise of a busy host.
    foreground_target_delay: float = 0.03
    #: Foreground: window growth per round trip, in packets, when the queue is empty
    #: (LEDBAT GAIN; the foreground may grow faster than RFC 6817's 1).
    foreground_gain: float = 2.0
    #: Foreground: seconds the queue must stay above the target, while the transfer
    #: backs off, before it competes as CUBIC (a loss-based flow holds the queue).
    foreground_compete_after: float = 3.0
    #: Foreground, competing: seconds between slowdowns that check whether the
    #: competitor is still there (LEDBAT++ §4.4 periodic slowdown).
    foreground_probe_interval: float = 10.0
    #: Largest chunk a peer may request (the largest allowed chunk size).
    max_chunk_length: int = MAX_CHUNK_SIZE
    #: Chunks this engine may be receiving at once (each holds a chunk-sized buffer).
    max_downloads: int = 64
    #: Chunks this engine serves at once, in total and per source IP (whatever its
    #: ports); more are refused BUSY.
    max_uploads: int = 256
    max_uploads_per_peer: int = 32
    #: Address validation (RFC 9000 §8.1): seconds a token stays valid (one to two of
    #: these), and how many peers' tokens a requester remembers.
    token_lifetime: float = 600.0
    max_peer_tokens: int = 4096
    #: Chunk requests accepted per second from one source IP, and the burst (RFC 8085
    #: §6: a UDP service must not let one source drive it at any rate). A fast peer asks
    #: ~120 chunks/s of 1 MiB per Gbit/s.
    source_request_rate: float = 1000.0
    source_request_burst: int = 256
    #: Source IPs with a rate-limit bucket (least recently seen forgotten first).
    max_tracked_sources: int = 4096
    #: Replies per second, in all, to addresses that have not proven they receive there
    #: (RETRY, VERSION_ERROR, CANCEL of stray data): each is smaller than 3x what it
    #: answers, and a flood of forged requests gets no more than this many.
    unvalidated_reply_rate: float = 2000.0
    #: Chunk requests sent per 2 x ``idle_timeout`` to a peer IP that has never answered
    #: (no RETRY from it yet). Peers are learned from unauthenticated discovery
    #: answers: a forged HAVE must not make us a reflector either (RFC 9000 §8.1).
    #: A live peer answers the first with a RETRY, and the others go at once.
    unproven_request_sends: int = 2
    #: Peers with congestion state kept when idle (oldest idle ones are forgotten).
    max_idle_flows: int = 1024
    #: Finished request IDs remembered, to answer late datagrams about them.
    recent_requests: int = 4096
    #: Control datagrams (acks, replies) queued before the shell collects them.
    max_control_queue: int = 8192
    #: A transfer gives up when it has sent this many times its segment count.
    max_transmissions_factor: int = 16
    #: Largest number of ranges one ACK carries.
    max_ack_ranges: int = WIRE_MAX_ACK_RANGES

    def __post_init__(self) -> None:
        if not DATA_HEADER_SIZE + 64 <= self.max_datagram_size <= MAX_DATAGRAM_SIZE:
            raise ValueError(f"max_datagram_size {self.max_datagram_size} out of range")
        if not 1 <= self.max_ack_ranges <= WIRE_MAX_ACK_RANGES:
            raise ValueError(f"max_ack_ranges must be 1..{WIRE_MAX_ACK_RANGES}")
        if not 0.0 <= self.foreground_loss_tolerance < 1.0:
            raise ValueError("foreground_loss_tolerance must be in [0, 1)")
        if not 1 <= self.initial_window_packets <= self.paced_initial_window_packets:
            raise ValueError("initial windows must satisfy 1 <= unpaced <= paced")
        if self.stall_threshold <= 0 or self.stall_grace <= 0:
            raise ValueError("stall_threshold and stall_grace must be > 0")
        if self.ack_every_packets < 1 or self.min_window_packets < 1:
            raise ValueError("ack_every_packets and min_window_packets must be >= 1")

    @property
    def segment_size(self) -> int:
        """Chunk bytes carried per data datagram."""
        return self.max_datagram_size - DATA_HEADER_SIZE
