"""The receiver's answers to datagrams about requests it is not receiving (any more).

A late DATA of a chunk that ended gets its final ACK again (the sender's was lost) or
a CANCEL; DATA of a request never made here (say, before a restart) gets a CANCEL, at
most one per request per ``min_rto``: both bounded, never more than the datagram that
provoked them (RFC 9000 §8.1).
"""

from __future__ import annotations

from collections import OrderedDict

from shoal.protocol.transfer.context import EngineContext, RecentRequests
from shoal.protocol.transfer.events import Address
from shoal.protocol.transfer.states import ReceiveState
from shoal.wire.messages import Cancel, encode_ack, encode_datagram

_U32_MASK = 0xFFFFFFFF
#: Shortest interval between answers to late datagrams about one finished request.
_LATE_REPLY_INTERVAL = 0.001


class Strays:
    """Finished requests (remembered, bounded) and the answers to datagrams about them."""

    def __init__(self, context: EngineContext) -> None:
        self._context = context
        self._config = context.config
        self.finished: RecentRequests[int] = RecentRequests(context.config.recent_requests)
        self._stray_cancels: OrderedDict[tuple[Address, int], float] = OrderedDict()

    def answer(
        self, request_id: int, addr: Address, now: float, *, data_packet: tuple[int, int] | None
    ) -> None:
        """A datagram about a request this engine is not receiving (any more);
        ``data_packet`` is a DATA datagram's packet number and timestamp (None for
        another message)."""
        context = self._context
        finished = self.finished.get(request_id)
        if finished is None or finished.peer != addr:
            if context.peers.knows(addr):
                context.counters.unknown_request += 1
            else:
                context.counters.unknown_sender += 1
            if data_packet is not None:
                self._cancel_stray(request_id, addr, now)
            return
        context.counters.late_datagrams += 1
        # At most one answer per millisecond: enough for probes, too few for a storm.
        if data_packet is None or now - finished.last_reply < _LATE_REPLY_INTERVAL:
            return
        finished.last_reply = now
        if finished.outcome in (ReceiveState.RECEIVED, ReceiveState.CORRUPTED):
            # Our final ACK was lost: repeat it so the sender can stop. It acknowledges
            # the packet that provoked it (a probe), with that packet's one-way delay:
            # the sender's flow takes an ACK's delay as a sample (RFC 6817 §3.4.2), and
            # a zero there, far under the path's real delay, became the flow's base
            # delay for minutes -- every later sample then read as a 100 ms queue at a
            # 200 ms RTT, and the flow shrank to its minimum window (cell 19, issue 9).
            packet_number, timestamp_us = data_packet
            reply = encode_ack(
                request_id,
                packet_number,
                0,
                (int(now * 1_000_000) - timestamp_us) & _U32_MASK,
                finished.segment_count,
                self._config.receive_window_packets,
            )
        else:
            reply = encode_datagram(Cancel(request_id))
        context.queue_control(reply, addr)

    def _cancel_stray(self, request_id: int, addr: Address, now: float) -> None:
        """Data for a request we never made (say, before we restarted): tell the sender.

        Like a TCP reset: without it a peer keeps retransmitting into a flow that will
        never be acknowledged, and that flow's window starves our new requests. At most
        one CANCEL per request per ``min_rto``, never larger than the data it answers.
        """
        key = (addr, request_id)
        last = self._stray_cancels.get(key)
        if last is not None and now - last < self._config.min_rto:
            return
        self._stray_cancels[key] = now
        self._stray_cancels.move_to_end(key)
        while len(self._stray_cancels) > self._config.recent_requests:
            self._stray_cancels.popitem(last=False)
        # 8 bytes for at least 21: never more than RFC 9000 §8.1 allows.
        self._context.reply_unvalidated(encode_datagram(Cancel(request_id)), addr, now)
