"""The sender: chunks peers asked this engine for, from request to acknowledged bytes.

Theory of operation
-------------------
*Address validation* (RFC 9000 §8.1). A request is served only when it carries the
token this engine computed for the requester's address (``AddressValidator``: a keyed
hash, no state). A request without it gets a 16-byte RETRY with the token (RFC 9000
§8.1.2), nothing else: no upload, no event, no read of the store. Requests are also
capped per second per source IP (RFC 8085 §6), and uploads in total and per source IP.

A served request becomes ``ChunkRequested``; ``send_chunk`` hands the bytes over (kept
by reference, never copied). Each (peer, mode) pair is a ``Flow`` with its own RTT
estimator, congestion controller and pacer; the flow sends its oldest chunk first, so
chunks finish in order and each one's packets stay dense (loss detection by packet
threshold needs that). Segments declared lost go before new ones. ACKs, loss
detection, probes and timeouts are ``recovery``'s. All per-packet bookkeeping lives in
preallocated ``bytearray``/``array`` tables (``Upload``); the hot path allocates only
the outgoing datagram, and each flow's data goes out back to back, full-size datagrams
of equal length to one address, ready for one GSO ``sendmsg``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Container
from typing import Any

from shoal.core.ids import ContentId
from shoal.protocol.transfer.context import EngineContext, Finished, RecentRequests
from shoal.protocol.transfer.events import (
    Address,
    ChunkDelivered,
    ChunkRequested,
    PeerPortClosed,
    RequestCancelled,
    Role,
    TransferTimedOut,
)
from shoal.protocol.transfer.flow import PACKET_THRESHOLD, Flow
from shoal.protocol.transfer.recovery import (
    arm_rto,
    detect_losses,
    on_ack_received,
    on_retransmission_timeout,
)
from shoal.protocol.transfer.states import (
    LocalProtocolError,
    SendInput,
    SendState,
    next_send_state,
)
from shoal.protocol.transfer.timers import TimerKind
from shoal.protocol.transfer.upload import Upload
from shoal.protocol.validation import AddressValidator, SourceLimiter
from shoal.wire.messages import (
    Ack,
    Cancel,
    ChunkRequest,
    Mode,
    Refusal,
    RefusalReason,
    Retry,
    encode_data,
    encode_datagram,
)

_U32_MASK = 0xFFFFFFFF


class Sender:
    """Every chunk this engine is sending (see the module docstring)."""

    def __init__(self, context: EngineContext, token_key: bytes | None) -> None:
        self._context = context
        config = context.config
        self._config = config
        # RFC 9000 §8.1: tokens (``token_key`` fixes the secret, for tests; else random).
        self.validator = AddressValidator(token_key, config.token_lifetime)
        self._source_limits = SourceLimiter(
            config.source_request_rate, config.source_request_burst, config.max_tracked_sources
        )
        self.uploads: dict[tuple[Address, int], Upload] = {}
        self._uploads_per_ip: dict[str, int] = {}
        self.flows: OrderedDict[tuple[Address, Mode], Flow] = OrderedDict()
        self.sending_flows: dict[tuple[Address, Mode], Flow] = {}
        self._finished: RecentRequests[tuple[Address, int]] = RecentRequests(config.recent_requests)
        self._segment_size = config.segment_size
        #: When ``send_flows`` last ran: the time a skipped ask would have refilled a
        #: held flow's pacer at (``flow_changed``).
        self._last_step_at = 0.0

    # -- answers to ChunkRequested ---------------------------------------------------

    def _answerable(self, peer: Address, request_id: int) -> Upload | None:
        """The upload the application answers; None when it already ended (cancelled,
        timed out: the answer comes late, which is no mistake); a request never seen is
        the application's mistake."""
        upload = self.uploads.get((peer, request_id))
        if upload is None and (peer, request_id) not in self._finished:
            raise LocalProtocolError(f"no chunk request {request_id} from {peer}")
        return upload

    def send_chunk(
        self,
        peer: Address,
        request_id: int,
        data: bytes | memoryview,
        now: float,
        path_rate: float | None = None,
    ) -> None:
        """See ``TransferEngine.send_chunk``."""
        upload = self._answerable(peer, request_id)
        if upload is None:
            return
        if len(data) != upload.chunk_length:
            raise LocalProtocolError(
                f"chunk request {request_id} is for {upload.chunk_length} bytes, got {len(data)}"
            )
        self._move(upload, SendInput.APPLICATION_SENT)
        key = (peer, upload.mode)
        flow = self.flows.get(key)
        if flow is None:
            flow = self.flows[key] = Flow(key, self._config, now)
        if path_rate is not None:
            packets = path_rate / self._segment_size
            if flow.known_rate is None or flow.known_rate < packets:
                flow.know_path(packets)
        self.flows.move_to_end(key)
        upload.start(memoryview(data).cast("B"), flow)
        upload.last_heard = now
        flow.uploads.append(upload)
        self.flow_changed(flow)
        if key not in self.sending_flows:
            self.sending_flows[key] = flow
            if flow.pacer.wait_until is not None:
                # A wake-up left from its last burst counts again (as it always did).
                self._context.timers.push(flow.pacer.wait_until, TimerKind.PACING, flow)

    def raise_path_rate(self, peer_ips: Collection[str], path_rate: float) -> None:
        """See ``TransferEngine.raise_path_rate``."""
        packets = path_rate / self._segment_size
        for (peer, _), flow in self.sending_flows.items():
            if peer[0] in peer_ips and flow.known_rate is not None and flow.known_rate < packets:
                flow.know_path(packets)
                self.flow_changed(flow)

    def abandon_peer(self, peer: Address) -> int:
        """See ``TransferEngine.abandon_peer``."""
        uploads = list(self._context.peers.uploads_of(peer).values())
        for upload in uploads:
            self._context.events.append(
                RequestCancelled(peer, upload.request_id, upload.content_id, upload.chunk_index)
            )
            self._move(upload, SendInput.PEER_CANCELLED)
            self._forget(upload)
        self._context.events.append(PeerPortClosed(peer))
        return len(uploads)

    def refuse_chunk(
        self, peer: Address, request_id: int, reason: RefusalReason, now: float
    ) -> None:
        """See ``TransferEngine.refuse_chunk``."""
        upload = self._answerable(peer, request_id)
        if upload is None:
            return
        self._move(upload, SendInput.APPLICATION_REFUSED)
        self._refused(upload, reason)

    def withdraw_chunk(
        self, peer: Address, request_id: int, reason: RefusalReason, now: float
    ) -> None:
        """See ``TransferEngine.withdraw_chunk``."""
        upload = self._answerable(peer, request_id)
        if upload is None:
            return
        self._move(upload, SendInput.APPLICATION_WITHDREW)
        self._refused(upload, reason)

    def _refused(self, upload: Upload, reason: RefusalReason) -> None:
        counters = self._context.counters
        counters.requests_refused += 1
        if reason is RefusalReason.INVALID_REQUEST:
            # e.g. a chunk index beyond the content, which only the application knows.
            counters.requests_invalid += 1
        refusal = encode_datagram(Refusal(upload.request_id, reason))
        self._context.queue_control(refusal, upload.peer)
        self._forget(upload, reason)

    def refuse_uploads_to(
        self, peer_ip: str, content_ids: Container[ContentId], reason: RefusalReason, now: float
    ) -> int:
        """See ``TransferEngine.refuse_uploads_to``."""
        if peer_ip not in self._uploads_per_ip:
            return 0
        ended = [
            upload
            for (peer, _), upload in self.uploads.items()
            if peer[0] == peer_ip and upload.content_id in content_ids
        ]
        for upload in ended:
            if upload.state is SendState.SENDING:
                self.withdraw_chunk(upload.peer, upload.request_id, reason, now)
            else:
                self.refuse_chunk(upload.peer, upload.request_id, reason, now)
        return len(ended)

    # -- datagrams from requesters ---------------------------------------------------

    def on_request(self, request: ChunkRequest, addr: Address, now: float) -> None:
        context = self._context
        counters = context.counters
        if not self._source_limits.admit(addr[0], now):
            counters.requests_rate_limited += 1
            return
        if not self.validator.is_valid(request.token, addr, now):
            # RFC 9000 §8.1.2: the address must first prove it receives here. The RETRY
            # (16 bytes) answers a 63-byte request; nothing is kept, nothing is asked of
            # the application, so forged requests cost neither memory nor disk reads.
            counters.requests_unvalidated += 1
            retry = Retry(request.request_id, self.validator.token(addr, now))
            if context.reply_unvalidated(encode_datagram(retry), addr, now):
                counters.retries_sent += 1
            return
        key = (addr, request.request_id)
        upload = self.uploads.get(key)
        if upload is not None:
            counters.duplicate_requests += 1
            if upload.data is None:  # still waiting its turn: the peer still wants it
                upload.last_heard = now
            return
        finished = self._finished.get(key)
        if finished is not None and now - finished.last_heard > self._config.idle_timeout:
            # Too old to be a repeat: the peer restarted and reuses request IDs.
            self._finished.forget(key)
            finished = None
        if finished is not None:
            counters.duplicate_requests += 1
            if finished.reason is not None:
                # Our refusal was lost: say it again.
                context.queue_control(
                    encode_datagram(Refusal(request.request_id, finished.reason)), addr
                )
            return
        config = self._config
        if (
            request.chunk_length > config.max_chunk_length
            or request.segment_size > self._segment_size
            or request.segment_size < 64
            # A resumed chunk's remainder starts at one of its segments, never at or past
            # its end: an offset only ever asks for less than the whole chunk.
            or request.offset >= request.chunk_length
            or request.offset % request.segment_size
        ):
            counters.requests_invalid += 1
            context.queue_control(
                encode_datagram(Refusal(request.request_id, RefusalReason.INVALID_REQUEST)), addr
            )
            return
        if (
            len(self.uploads) >= config.max_uploads
            or self._uploads_per_ip.get(addr[0], 0) >= config.max_uploads_per_peer
        ):
            counters.requests_refused_busy += 1
            context.queue_control(
                encode_datagram(Refusal(request.request_id, RefusalReason.BUSY)), addr
            )
            return
        upload = Upload(addr, request, now, context.next_order())
        self.uploads[key] = upload
        context.peers.add_upload(upload)
        self._uploads_per_ip[addr[0]] = self._uploads_per_ip.get(addr[0], 0) + 1
        context.events.append(
            ChunkRequested(
                addr,
                request.request_id,
                request.content_id,
                request.chunk_index,
                request.chunk_length,
                request.mode,
                request.offset,
            )
        )

    def on_ack(self, ack: Ack, addr: Address, now: float) -> None:
        context = self._context
        context.counters.acks_received += 1
        upload = self.uploads.get((addr, ack.request_id))
        if upload is None:
            self.on_stray(ack.request_id, addr)
            return
        if upload.flow is not None:
            self.flow_changed(upload.flow)  # (its window, RTT, data, peer's window)
        if on_ack_received(context, upload, ack, now):
            context.counters.chunks_delivered += 1
            context.events.append(
                ChunkDelivered(addr, upload.request_id, upload.content_id, upload.chunk_index)
            )
            self._move(upload, SendInput.ALL_ACKNOWLEDGED)
            self._forget(upload)

    def on_cancel(self, message: Cancel, addr: Address) -> None:
        upload = self.uploads.get((addr, message.request_id))
        if upload is None:
            self.on_stray(message.request_id, addr)
            return
        self._context.events.append(
            RequestCancelled(addr, upload.request_id, upload.content_id, upload.chunk_index)
        )
        self._move(upload, SendInput.PEER_CANCELLED)
        self._forget(upload)

    def on_stray(self, request_id: int, addr: Address) -> None:
        """A datagram about an upload this engine does not have (any more)."""
        counters = self._context.counters
        if (addr, request_id) in self._finished:
            counters.late_datagrams += 1
        elif self._context.peers.knows(addr):
            counters.unknown_request += 1
        else:
            counters.unknown_sender += 1

    # -- sending data ----------------------------------------------------------------

    def send_flows(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        """Append each sending flow's data that window and pacer allow now to ``out``.

        A held flow (``Flow.held``) is not asked: until it changes it would send
        nothing and change nothing. On a slow link a flow's window is full or its data
        all sent at most steps of its host (a datagram or an ACK of another transfer),
        and every sending flow was asked at each (issue 9). A flow its pacer held back
        (``Flow.paced``) is asked cheaply: each ask refills its bucket at the time it
        is made, as before, and it is asked in full once a token has accrued.
        """
        push = self._context.timers.push
        for flow in list(self.sending_flows.values()):
            if flow.held:
                continue
            if flow.paced:
                wake = flow.pacer.refill_held(now)
                if wake is not None:
                    push(wake, TimerKind.PACING, flow)
                    continue
            self._send_flow(flow, now, out)
        self._last_step_at = now

    def flow_changed(self, flow: Flow) -> None:
        """Something may let ``flow`` send again (an ACK, a timeout, a new or an ended
        chunk, a path's rate): ask it at the next step, with its pacer refilled as the
        asks it skipped would have left it."""
        if flow.held_full:
            flow.pacer.last_refill = self._last_step_at
            flow.held_full = False
        flow.held = flow.paced = False
        flow.changes += 1

    def _send_flow(self, flow: Flow, now: float, out: list[tuple[bytes, Address]]) -> None:
        cc = flow.cc
        pacer = flow.pacer
        room = int(cc.cwnd) - flow.in_flight
        flow.paced = False
        if room <= 0:
            pacer.wait_until = None
            flow.held = True  # (an ask with a full window changes nothing)
            return
        budget = pacer.budget(now, room, cc.cwnd, flow.rtt.srtt, cc.in_slow_start, flow.rate_cap)
        # Oldest chunk first: a chunk finishes as soon as it can, and its packets stay
        # dense enough for packet-threshold loss detection.
        sent = 0
        changes = flow.changes
        for upload in list(flow.uploads):
            if sent >= budget:
                break
            sent += self._send_upload(upload, budget - sent, now, out)
        flow.on_sent(sent)
        pacer.on_sent(now, sent, budget, room)
        if pacer.wait_until is not None:
            self._context.timers.push(pacer.wait_until, TimerKind.PACING, flow)
            flow.paced = flow.changes == changes
        elif flow.changes == changes:
            if sent == room:
                flow.held = True  # its window is full now
            elif not sent and pacer.tokens == pacer.burst:
                # Nothing to send, and a full bucket stays full: the next asks would
                # only move ``last_refill`` (``flow_changed`` does it on release).
                flow.held = flow.held_full = True

    def _send_upload(
        self, upload: Upload, budget: int, now: float, out: list[tuple[bytes, Address]]
    ) -> int:
        data = upload.data
        flow = upload.flow
        assert data is not None and flow is not None
        timestamp_us = int(now * 1_000_000) & _U32_MASK
        peer = upload.peer
        request_id = upload.request_id
        segment_size = upload.segment_size
        acked = upload.acked
        in_flight = upload.in_flight
        last_packet = upload.last_packet
        sent_segment = upload.sent_segment
        sent_time = upload.sent_time
        queue = upload.queue
        retransmit = upload.retransmit
        limit = min(upload.segment_count, upload.cumulative + upload.peer_window)
        packet_number = len(sent_segment)
        first_packet = packet_number
        retransmitted = 0
        payload_bytes = 0
        while packet_number - first_packet < budget:
            if retransmit:
                segment = retransmit.popleft()
                if acked[segment] or in_flight[segment]:
                    continue
                retransmitted += 1
            elif upload.next_new < limit:
                segment = upload.next_new
                upload.next_new = segment + 1
            else:
                break
            offset = segment * segment_size
            payload = data[offset : offset + segment_size]
            out.append(
                (encode_data(request_id, packet_number, segment, timestamp_us, payload), peer)
            )
            payload_bytes += len(payload)
            sent_segment.append(segment)
            sent_time.append(now)
            last_packet[segment] = packet_number
            in_flight[segment] = 1
            queue.append(packet_number)
            packet_number += 1
        sent = packet_number - first_packet
        if sent:
            counters = self._context.counters
            counters.data_packets_sent += sent
            counters.data_packets_retransmitted += retransmitted
            counters.payload_bytes_sent += payload_bytes
            if upload.rto_deadline is None:
                arm_rto(
                    self._context, upload, now + flow.rtt.probe_timeout(self._config.max_ack_delay)
                )
            if packet_number > self._config.max_transmissions_factor * upload.segment_count + 64:
                # The path loses nearly everything: give up rather than grow without bound.
                # (Forgetting the upload takes all its packets, these too, off the flight.)
                self._end_silent(upload)
        return sent

    # -- timers ----------------------------------------------------------------------

    def on_timer(self, upload: Upload, peer_silent: bool, now: float) -> None:
        """Fire what is due of ``upload``: its end if its peer fell silent, else loss
        detection by time and the probe / retransmission timeout."""
        if peer_silent or upload.heard + self._config.idle_timeout <= now:
            # Its own silence too: a peer whose new requests keep it "live" while it
            # acknowledges nothing of this upload does not hold it for ever.
            self._end_silent(upload)
            return
        if upload.flow is not None:
            self.flow_changed(upload.flow)  # (a loss or a timeout: its window, resends)
        if upload.loss_time is not None and upload.loss_time <= now:
            detect_losses(self._context, upload, now)
        if upload.rto_deadline is not None and upload.rto_deadline <= now:
            flow = upload.flow
            if upload.timeouts == 0 and upload.sent_time and flow is not None:
                # RFC 9002 §6.2.1: the PTO runs from the last ack-eliciting packet sent
                # (restarted at each send; here when it fires, not with a timer per
                # send). A paced chunk still being sent has no lost tail yet: its first
                # ACK queued behind its own packets (the WAN's, the uploader's uplink).
                pto = flow.rtt.probe_timeout(self._config.max_ack_delay)
                restart = upload.sent_time[-1] + pto
                if restart > now:
                    arm_rto(self._context, upload, restart)
                    return
            on_retransmission_timeout(self._context, upload, now)

    def timer_is_live(self, kind: TimerKind, target: Any, deadline: float) -> bool:
        """Is ``deadline`` still what ``target`` (an upload, or a flow for PACING: see
        ``timers.Entry``) waits for under ``kind``?"""
        if kind is TimerKind.PACING:
            flow: Flow = target
            return self.sending_flows.get(flow.key) is flow and flow.pacer.wait_until == deadline
        upload: Upload = target
        if self.uploads.get((upload.peer, upload.request_id)) is not upload:
            return False
        if kind is TimerKind.LOSS:
            return upload.loss_time == deadline
        return upload.rto_deadline == deadline

    # -- ends ------------------------------------------------------------------------

    def _move(self, upload: Upload, event: SendInput) -> None:
        state = next_send_state(upload.state, event)
        if state is None:
            raise LocalProtocolError(f"send {upload.state.value}: no move on {event.value}")
        upload.state = state

    def _end_silent(self, upload: Upload) -> None:
        context = self._context
        context.counters.transfers_timed_out += 1
        context.events.append(
            TransferTimedOut(
                upload.peer, upload.request_id, upload.content_id, upload.chunk_index, Role.SENDER
            )
        )
        self._move(upload, SendInput.PEER_SILENT)
        self._forget(upload)

    def _forget(self, upload: Upload, reason: RefusalReason | None = None) -> None:
        key = (upload.peer, upload.request_id)
        del self.uploads[key]
        peers = self._context.peers
        peers.remove_upload(upload)
        peers.pass_on_liveness(upload.peer, upload.last_heard)
        ip = upload.peer[0]
        remaining = self._uploads_per_ip[ip] - 1
        if remaining:
            self._uploads_per_ip[ip] = remaining
        else:
            del self._uploads_per_ip[ip]
        flow = upload.flow
        if flow is not None:
            if upload.state is SendState.DELIVERED and flow.packet_threshold > PACKET_THRESHOLD:
                # Reordering seen once is forgotten slowly, one step per chunk delivered.
                flow.packet_threshold -= 1
            flow.in_flight -= sum(upload.in_flight)
            flow.uploads.remove(upload)
            self.flow_changed(flow)
            if not flow.uploads:
                self.sending_flows.pop(flow.key, None)
                flow.pacer.wait_until = None
                self._forget_idle_flows()
        upload.data = None
        self._finished.remember(
            key, Finished(upload.peer, upload.state, 0, upload.last_heard, reason)
        )

    def _forget_idle_flows(self) -> None:
        excess = len(self.flows) - len(self.sending_flows) - self._config.max_idle_flows
        if excess <= 0:
            return
        for key in [k for k in self.flows if k not in self.sending_flows][:excess]:
            del self.flows[key]
