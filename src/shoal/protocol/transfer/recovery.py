"""Loss recovery of the sender: ACK processing, loss detection, probes and timeouts.

Theory of operation
-------------------
Every transmission gets a new packet number, so an ACK's largest packet number gives an
unambiguous RTT sample (RFC 9002 §5.3, the peer's ack delay subtracted), and a packet
is declared lost per RFC 9002 §6.1: ``packet_threshold`` later packets acknowledged
(§6.1.1), or 9/8 RTT passed since it was sent while a later one was acknowledged
(§6.1.2; a loss timer is armed for the latter). Lost segments go to the upload's
``retransmit`` queue; the congestion controller hears of the loss once per episode
(RFC 6582 §3.2, RFC 9002 §7.3.2), and only when the flow's recent loss rate says it is
congestion. A loss that proves spurious (the original arrives) undoes the reduction
and tolerates more reordering (RFC 4015, RFC 8985 §6.2).

A lost tail is found by probe timeouts (RFC 9002 §6.2: two probes, window untouched),
then by the retransmission timeout proper, which retransmits everything outstanding
and collapses the window only if the whole flow went unacknowledged for that long
(RFC 9002 §7.6 persistent congestion).
"""

from __future__ import annotations

from shoal.protocol.transfer.context import EngineContext
from shoal.protocol.transfer.flow import LOSS_MEMORY, Flow
from shoal.protocol.transfer.timers import TimerKind
from shoal.protocol.transfer.upload import Upload
from shoal.wire.messages import Ack, encode_data

#: RFC 9002 §6.1.2 kTimeThreshold.
_TIME_THRESHOLD = 9 / 8
_MAX_PACKET_THRESHOLD = 32
#: Probe timeouts in a row before the retransmission timeout proper (and its collapse
#: of the window): one lost probe or probe ACK is not persistent congestion.
_PROBES_BEFORE_RTO = 2
_U32_MASK = 0xFFFFFFFF


def arm_rto(context: EngineContext, upload: Upload, deadline: float) -> None:
    """Set the upload's probe / retransmission timer."""
    upload.rto_deadline = deadline
    context.timers.push(deadline, TimerKind.RTO, upload)


def on_ack_received(context: EngineContext, upload: Upload, ack: Ack, now: float) -> bool | None:
    """Apply ``ack`` to a sending upload: mark segments, sample the RTT, detect losses,
    grow the window, restart the timer. True when every segment is now acknowledged;
    None when the ACK is invalid (counted, ignored)."""
    flow = upload.flow
    if flow is None or upload.data is None:
        # An ACK before we sent anything: out of protocol order.
        context.counters.invalid_acks += 1
        return None
    sent_time = upload.sent_time
    largest = ack.largest_packet_number
    top = ack.ranges[-1][1] if ack.ranges else ack.cumulative
    if top > upload.next_new or largest >= len(sent_time):
        context.counters.invalid_acks += 1
        return None
    upload.last_heard = now
    flow.last_ack_time = now
    upload.peer_window = ack.receive_window
    acked = upload.acked
    in_flight = upload.in_flight
    newly_acked = 0
    freed = 0
    spurious = 0
    spans = [(upload.cumulative, ack.cumulative), *ack.ranges]
    for start, end in spans:
        index = acked.find(0, start, end)
        while index >= 0:
            acked[index] = 1
            newly_acked += 1
            if in_flight[index]:
                in_flight[index] = 0
                freed += 1
            else:
                # Declared lost, yet the original arrived: the path reordered it.
                spurious += 1
            index = acked.find(0, index + 1, end)
    if ack.cumulative > upload.cumulative:
        upload.cumulative = ack.cumulative
    rtt = flow.rtt
    # Only an ACK of a packet newer than any acknowledged before carries fresh samples
    # (RFC 9002 §5.1 for the RTT; the same for the one-way delay): a repeated or
    # reordered ACK's delay belongs to packets long gone, and a peer's repeated final
    # ACK (an older build's says 0) would otherwise set the flow's base delay.
    fresh = largest > upload.largest_acked_packet
    if fresh:
        upload.largest_acked_packet = largest
        sample = now - sent_time[largest]
        ack_delay = ack.ack_delay_us / 1_000_000
        # RFC 9002 §5.3: subtract the peer's ack delay unless that undercuts min RTT.
        if sample - ack_delay >= min(rtt.min_rtt, sample):
            sample -= ack_delay
        flow.on_rtt_sample(max(sample, 1e-6))
    flow.in_flight -= freed
    if spurious:
        _on_spurious_loss(context, flow, spurious)
    lost = detect_losses(context, upload, now)
    max_ack_delay = context.config.max_ack_delay
    if newly_acked:
        upload.timeouts = 0
        upload.acked_count += newly_acked
        # Every ACK carries a delay sample; growth waits for the end of recovery.
        in_recovery = sent_time[largest] <= flow.recovery_start
        window_before = flow.cc.cwnd
        flow.cc.on_ack(
            newly_acked,
            flow.in_flight,
            now,
            ack.one_way_delay_us if fresh else None,
            in_recovery,
            rtt.smoothed,
        )
        flow.hold_growth_at_known_rate(window_before)
        if upload.acked_count == upload.segment_count:
            return True
        # RFC 6298 §5.3: restart the timer when new data is acknowledged.
        if upload.queue:
            arm_rto(context, upload, now + rtt.probe_timeout(max_ack_delay))
        else:
            upload.rto_deadline = None
    elif lost and upload.rto_deadline is None:
        arm_rto(context, upload, now + rtt.probe_timeout(max_ack_delay))
    return False


def _on_spurious_loss(context: EngineContext, flow: Flow, count: int) -> None:
    """Undo the last reduction and tolerate more reordering (RFC 4015 Eifel response,
    RFC 8985 §6.2 RACK reordering window, in packet-count form)."""
    context.counters.spurious_losses += count
    if flow.packet_threshold < _MAX_PACKET_THRESHOLD:
        flow.packet_threshold += 1
    if flow.undo_cwnd is not None:
        cc = flow.cc
        cc.cwnd = max(cc.cwnd, flow.undo_cwnd)
        cc.ssthresh = max(cc.ssthresh, flow.undo_ssthresh)
        flow.undo_cwnd = None
        flow.recovery_start = float("-inf")
        context.counters.congestion_events_undone += 1


def detect_losses(context: EngineContext, upload: Upload, now: float) -> int:
    """Declare lost what RFC 9002 §6.1 says is lost; return how many packets.

    A packet is lost when a packet sent at least ``packet_threshold`` later was
    acknowledged (§6.1.1), or when 9/8 of an RTT passed since it was sent and a later
    one was acknowledged (§6.1.2); for the latter a loss timer is armed.
    """
    flow = upload.flow
    assert flow is not None
    rtt = flow.rtt
    queue = upload.queue
    acked = upload.acked
    in_flight = upload.in_flight
    sent_segment = upload.sent_segment
    sent_time = upload.sent_time
    last_packet = upload.last_packet
    retransmit = upload.retransmit
    largest_acked = upload.largest_acked_packet
    loss_delay = _TIME_THRESHOLD * max(rtt.smoothed, rtt.latest)
    recovery_start = flow.recovery_start
    packet_threshold = flow.packet_threshold
    lost = 0
    lost_after_recovery = False
    upload.loss_time = None
    while queue:
        packet_number = queue[0]
        segment = sent_segment[packet_number]
        if acked[segment] or last_packet[segment] != packet_number:
            queue.popleft()
            continue
        if packet_number >= largest_acked:
            break
        sent_at = sent_time[packet_number]
        lost_at = sent_at + loss_delay
        if largest_acked - packet_number < packet_threshold and lost_at > now:
            upload.loss_time = lost_at
            context.timers.push(lost_at, TimerKind.LOSS, upload)
            break
        queue.popleft()
        in_flight[segment] = 0
        retransmit.append(segment)
        lost += 1
        if sent_at > recovery_start:
            lost_after_recovery = True
    if lost:
        flow.in_flight -= lost
        flow.recent_lost += lost
        cc = flow.cc
        if lost_after_recovery and cc.loss_is_congestion(flow.recent_lost, flow.recent_sent):
            # One reduction per loss episode (RFC 6582 §3.2, RFC 9002 §7.3.2).
            flow.recovery_start = now
            flow.undo_cwnd = cc.cwnd
            flow.undo_ssthresh = cc.ssthresh
            cc.on_congestion(now)
            flow.lost_at_share = flow.known_rate is not None
            # The next reduction needs losses of its own, not this episode's again.
            flow.recent_lost = 0.0
            flow.recent_sent = LOSS_MEMORY / 4
            context.counters.congestion_events += 1
    return lost


def on_retransmission_timeout(context: EngineContext, upload: Upload, now: float) -> None:
    """The upload's timer fired: probe (RFC 9002 §6.2), or after ``_PROBES_BEFORE_RTO``
    probes, retransmit everything outstanding (RFC 6298 §5.4-5.6)."""
    flow = upload.flow
    assert flow is not None
    context.counters.retransmission_timeouts += 1
    rtt = flow.rtt
    upload.timeouts += 1
    upload.loss_time = None
    if upload.timeouts <= _PROBES_BEFORE_RTO:
        # A probe timeout (RFC 9002 §6.2): the tail of the chunk was lost, or its ACK
        # was. Resend the two oldest unacknowledged segments (§6.2.4 allows two),
        # whatever the window says (§7.5); keep the window; back the timer off.
        _send_probe(context, upload, now)
        _send_probe(context, upload, now)
        pto = rtt.probe_timeout(context.config.max_ack_delay) * (1 << upload.timeouts)
        arm_rto(context, upload, now + min(pto, rtt.max_rto))
        return
    # Probes unanswered too: RFC 6298 §5.4-5.6 retransmit everything outstanding,
    # back the timer off, and (RFC 5681 §3.1, RFC 9002 §7.6 persistent congestion)
    # restart from the loss window.
    freed = 0
    in_flight = upload.in_flight
    acked = upload.acked
    last_packet = upload.last_packet
    sent_segment = upload.sent_segment
    for packet_number in upload.queue:
        segment = sent_segment[packet_number]
        if in_flight[segment] and not acked[segment] and last_packet[segment] == packet_number:
            in_flight[segment] = 0
            freed += 1
            upload.retransmit.append(segment)
    upload.queue.clear()
    flow.in_flight -= freed
    # RFC 9002 §7.6: only when nothing at all got through for that long is the
    # congestion persistent; a single chunk stuck on its own losses is not.
    if now - flow.last_ack_time >= rtt.rto:
        flow.cc.on_timeout()
        flow.undo_cwnd = None
        flow.recovery_start = now
        context.counters.congestion_events += 1
    rtt.backoff = min(rtt.backoff * 2, 64)
    upload.rto_deadline = None


def _send_probe(context: EngineContext, upload: Upload, now: float) -> None:
    """Send the oldest outstanding segment again under a new packet number."""
    queue = upload.queue
    sent_segment = upload.sent_segment
    acked = upload.acked
    last_packet = upload.last_packet
    while queue:
        segment = sent_segment[queue[0]]
        if acked[segment] or last_packet[segment] != queue[0]:
            queue.popleft()
            continue
        break
    else:
        return
    data = upload.data
    assert data is not None
    # The earlier transmission is superseded (its queue entry turns stale); the
    # segment stays counted once in flight.
    packet_number = len(sent_segment)
    offset = segment * upload.segment_size
    context.queue_control(
        encode_data(
            upload.request_id,
            packet_number,
            segment,
            int(now * 1_000_000) & _U32_MASK,
            data[offset : offset + upload.segment_size],
        ),
        upload.peer,
    )
    sent_segment.append(segment)
    upload.sent_time.append(now)
    last_packet[segment] = packet_number
    queue.append(packet_number)
    counters = context.counters
    counters.probes_sent += 1
    counters.data_packets_sent += 1
    counters.data_packets_retransmitted += 1
