"""A bulk TCP flow for the simulator: a sans-I/O Reno/CUBIC sender and its receiver.

Theory of operation
-------------------
It stands for "the users' own traffic" that a shoal transfer shares a WAN link with
(issue 9), so it models what decides a TCP flow's share of a drop-tail bottleneck and
nothing else: no handshake, no byte stream, no flow control. Both ends are ``Machine``s
of ``shoal_dev.sim.network`` (``receive_datagram``, ``handle_timer``, ``datagrams_to_send``,
``get_timer``), so they run beside shoal's engines under the same virtual clock.

*Segments* carry a 12-byte header (sequence number, packet number, kind) padded to a
full-size segment of ``SEGMENT_SIZE`` bytes, which with the simulator's 28 bytes of
IP/UDP headers makes a 1500-byte packet, as on Ethernet.

*The receiver* acknowledges every segment at once (Linux's quick-ack, and what
delayed ACKs amount to at these rates) with the cumulative sequence number and the
packet number of the segment that triggered the ACK -- a one-block SACK (RFC 2018) that
lets the sender keep a scoreboard.

*The sender* keeps a window in segments: slow start and congestion avoidance of
RFC 5681 §3.1, or CUBIC's window growth (RFC 9438 §4) with its beta of 0.7; one
reduction per loss episode (RFC 6582 §3.2); losses found the RACK way (RFC 8985 §6.2:
a segment is lost once one sent a reordering window after it is acknowledged), and a
retransmission timeout (RFC 6298, floored at Linux's 200 ms) that restarts from one
segment. It is not paced: Linux sends CUBIC unpaced unless the fq qdisc is used, which
is what makes a deep drop-tail queue fill.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from shoal.core.address import Address

#: Payload bytes per segment: 1500-byte IP packets with the simulator's 28-byte headers.
SEGMENT_SIZE = 1472
_HEADER = struct.Struct(">IIB")
_DATA = 0
_ACK = 1
#: RFC 6298 §2.4 says 1 s; Linux floors the RTO at 200 ms (TCP_RTO_MIN).
MIN_RTO = 0.2
MAX_RTO = 60.0
#: RFC 9438 §4.6 beta_cubic and §5.1 C.
CUBIC_BETA = 0.7
CUBIC_C = 0.4


@dataclass(slots=True)
class TcpStats:
    """What a receiver has seen: unique payload bytes, for rates over time."""

    payload_bytes: int = 0
    segments: int = 0
    duplicates: int = 0


class TcpReceiver:
    """Accepts segments from any sender, acknowledges each one at once."""

    def __init__(self) -> None:
        self.stats = TcpStats()
        self._cumulative: dict[Address, int] = {}
        self._above: dict[Address, set[int]] = {}
        self._out: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if len(data) < _HEADER.size:
            return
        sequence, packet_number, kind = _HEADER.unpack_from(data)
        if kind != _DATA:
            return
        cumulative = self._cumulative.get(addr, 0)
        above = self._above.setdefault(addr, set())
        if sequence < cumulative or sequence in above:
            self.stats.duplicates += 1
        else:
            self.stats.segments += 1
            self.stats.payload_bytes += len(data) - _HEADER.size
            above.add(sequence)
            while cumulative in above:
                above.discard(cumulative)
                cumulative += 1
            self._cumulative[addr] = cumulative
        self._out.append((_HEADER.pack(cumulative, packet_number, _ACK), addr))

    def handle_timer(self, now: float) -> None:
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None


class TcpSender:
    """A bulk sender that always has data, from ``start`` until ``stop`` (virtual s)."""

    def __init__(
        self,
        destination: Address,
        *,
        start: float = 0.0,
        stop: float = float("inf"),
        cubic: bool = True,
        initial_window: int = 10,
    ) -> None:
        self.destination = destination
        self.start = start
        self.stop = stop
        self.cubic = cubic
        self.cwnd = float(initial_window)
        self.ssthresh = float("inf")
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rtt = float("inf")
        self.backoff = 1
        self.next_sequence = 0
        self.cumulative = 0
        self.losses = 0
        self.timeouts = 0
        # Per packet number: the segment it carried and when it left.
        self._packet_segment: list[int] = []
        self._packet_time: list[float] = []
        # Outstanding segments -> packet number of their latest transmission.
        self._outstanding: dict[int, int] = {}
        # Packet numbers in the order sent, for RACK; stale ones are skipped lazily.
        self._sent_order: deque[int] = deque()
        # Segments declared lost and not yet sent again (a list in order, and a set).
        self._retransmit: deque[int] = deque()
        self._lost: set[int] = set()
        self._recovery_until = -1
        self._latest_acked_time = float("-inf")
        self._rto_deadline: float | None = None
        # CUBIC state (RFC 9438 §4.1): W_max and the start of the current epoch.
        self._w_max = 0.0
        self._epoch_start: float | None = None
        self._k = 0.0
        self._w_est = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._outstanding) - len(self._lost)

    @property
    def rto(self) -> float:
        if self.srtt is None:
            return 1.0 * self.backoff
        return min(MAX_RTO, max(MIN_RTO, self.srtt + 4 * self.rttvar) * self.backoff)

    # -- Machine interface ---------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if len(data) < _HEADER.size or addr != self.destination:
            return
        cumulative, packet_number, kind = _HEADER.unpack_from(data)
        if kind != _ACK or packet_number >= len(self._packet_segment):
            return
        newly_acked = 0
        sent_at = self._packet_time[packet_number]
        segment = self._packet_segment[packet_number]
        if self._outstanding.get(segment) == packet_number:
            # RFC 6298 §3 (Karn) holds: each transmission has its own packet number.
            self._on_rtt_sample(now - sent_at)
            del self._outstanding[segment]
            self._lost.discard(segment)
            newly_acked += 1
        for old in range(self.cumulative, cumulative):
            if self._outstanding.pop(old, None) is not None:
                self._lost.discard(old)
                newly_acked += 1
        if cumulative > self.cumulative:
            self.cumulative = cumulative
        if sent_at > self._latest_acked_time:
            self._latest_acked_time = sent_at
        self._detect_losses(now)
        if newly_acked:
            self.backoff = 1
            self._grow(newly_acked, now)
            self._rto_deadline = now + self.rto if self._outstanding else None

    def handle_timer(self, now: float) -> None:
        if self._rto_deadline is not None and self._rto_deadline <= now:
            # RFC 5681 §3.1 / RFC 6298 §5.5-5.7: everything outstanding is resent from a
            # window of one segment, and the timer backs off.
            self.timeouts += 1
            self.ssthresh = max(self.in_flight / 2, 2.0)
            self._w_max = self.cwnd
            self._epoch_start = None
            self.cwnd = 1.0
            self._retransmit = deque(sorted(self._outstanding))
            self._lost = set(self._outstanding)
            self._recovery_until = self.next_sequence
            self.backoff = min(self.backoff * 2, 64)
            self._rto_deadline = now + self.rto

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out: list[tuple[bytes, Address]] = []
        if now < self.start:
            return out
        padding = bytes(SEGMENT_SIZE - _HEADER.size)
        while self.in_flight < int(self.cwnd):
            if self._retransmit:
                segment = self._retransmit.popleft()
                if segment not in self._lost:
                    continue  # acknowledged meanwhile
                self._lost.discard(segment)
            elif now < self.stop:
                segment = self.next_sequence
                self.next_sequence += 1
            else:
                break
            packet_number = len(self._packet_segment)
            self._packet_segment.append(segment)
            self._packet_time.append(now)
            self._outstanding[segment] = packet_number
            self._sent_order.append(packet_number)
            out.append((_HEADER.pack(segment, packet_number, _DATA) + padding, self.destination))
        if out and self._rto_deadline is None:
            self._rto_deadline = now + self.rto
        return out

    def get_timer(self) -> float | None:
        if self.next_sequence == 0 and self.start > 0:
            return self.start
        return self._rto_deadline

    # -- internals ------------------------------------------------------------------

    def _on_rtt_sample(self, rtt: float) -> None:
        self.min_rtt = min(self.min_rtt, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2  # RFC 6298 §2.2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)  # §2.3
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def _detect_losses(self, now: float) -> None:
        # RFC 8985 §6.2: lost once a segment sent a reordering window (min_rtt / 4)
        # after it has been acknowledged.
        window = self.min_rtt / 4 if self.min_rtt < float("inf") else 0.0
        threshold = self._latest_acked_time - window
        order = self._sent_order
        lost: list[int] = []
        while order:
            packet_number = order[0]
            segment = self._packet_segment[packet_number]
            if self._outstanding.get(segment) != packet_number or segment in self._lost:
                order.popleft()  # acknowledged, or already sent again
                continue
            if self._packet_time[packet_number] >= threshold:
                break
            order.popleft()
            lost.append(segment)
        if not lost:
            return
        self.losses += len(lost)
        self._lost.update(lost)
        self._retransmit.extend(lost)
        if min(lost) >= self._recovery_until:
            # RFC 6582 §3.2: one reduction per window of data (loss episode).
            self._recovery_until = self.next_sequence
            self._reduce(now)

    def _reduce(self, now: float) -> None:
        if self.cubic:
            # RFC 9438 §4.6-4.7: W_max with fast convergence, then cwnd * beta.
            self._w_max = self.cwnd * (1 + CUBIC_BETA) / 2 if self.cwnd < self._w_max else self.cwnd
            self.ssthresh = max(self.cwnd * CUBIC_BETA, 2.0)
            self._epoch_start = None
        else:
            self.ssthresh = max(self.cwnd / 2, 2.0)  # RFC 5681 §3.1 eq. (4)
        self.cwnd = self.ssthresh

    def _grow(self, newly_acked: int, now: float) -> None:
        if self.cumulative < self._recovery_until and self._lost:
            return  # RFC 6582: no growth while repairing a loss episode
        if self.cwnd < self.ssthresh:
            self.cwnd += newly_acked  # RFC 5681 §3.1 slow start
            return
        if not self.cubic:
            self.cwnd += newly_acked / self.cwnd
            return
        # RFC 9438 §4.2: W_cubic(t) = C (t - K)^3 + W_max, with the Reno-friendly
        # region of §4.3 as a floor.
        if self._epoch_start is None:
            self._epoch_start = now
            self._k = (max(self._w_max - self.cwnd, 0.0) / CUBIC_C) ** (1 / 3)
            self._w_est = self.cwnd
        rtt = self.srtt or 0.1
        elapsed = now - self._epoch_start
        target = CUBIC_C * (elapsed + rtt - self._k) ** 3 + self._w_max
        alpha = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)
        self._w_est += alpha * newly_acked / self.cwnd
        if target < self._w_est:
            target = self._w_est
        if target > self.cwnd:
            # §4.4: cwnd grows by (target - cwnd) / cwnd per acknowledged segment.
            self.cwnd += min(target - self.cwnd, self.cwnd) * newly_acked / self.cwnd
        else:
            self.cwnd += newly_acked / (100 * self.cwnd)
