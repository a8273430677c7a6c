"""``TransferCounters``: what a transfer engine saw and did.

Every input the engine drops or refuses is counted here, with the reason in the field's
comment (and the RFC section where a standard says why), so that an operator can tell a
lossy path from a misbehaving peer from a full queue.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class TransferCounters:
    """What the engine saw and did; every dropped or refused input is counted here."""

    datagrams_received: int = 0
    datagrams_sent: int = 0
    data_packets_sent: int = 0
    data_packets_retransmitted: int = 0
    payload_bytes_sent: int = 0
    payload_bytes_received: int = 0
    acks_sent: int = 0
    acks_received: int = 0
    chunks_received: int = 0
    chunks_delivered: int = 0
    #: Dropped: not a shoal datagram at all.
    wrong_magic: int = 0
    #: Dropped and answered with VERSION_ERROR.
    unsupported_version: int = 0
    version_errors_sent: int = 0
    version_errors_received: int = 0
    #: Dropped: truncated, oversized, or a field out of range.
    malformed: int = 0
    #: Dropped: about a transfer, from an address we have no transfer with.
    unknown_sender: int = 0
    #: Dropped: from a known peer, about a request ID it has no transfer under.
    unknown_request: int = 0
    #: About a request that just finished (answered when useful, else dropped).
    late_datagrams: int = 0
    #: Dropped: a segment index beyond the chunk, or a payload of the wrong length.
    data_outside_chunk: int = 0
    duplicate_data: int = 0
    #: Dropped: an ACK for segments or packets never sent, or out of protocol order.
    invalid_acks: int = 0
    #: Refused as INVALID_REQUEST: a chunk length or segment size this engine does not
    #: accept, or (by the application) a chunk index beyond the content.
    requests_invalid: int = 0
    #: Refused by the application, any reason (``refuse_chunk``).
    requests_refused: int = 0
    #: Refused BUSY: over ``max_uploads`` or ``max_uploads_per_peer``.
    requests_refused_busy: int = 0
    #: Answered RETRY, not served: no valid token for its source address (RFC 9000 §8.1).
    requests_unvalidated: int = 0
    #: Dropped: over the source IP's request rate (RFC 8085 §6).
    requests_rate_limited: int = 0
    #: Not sent: a reply to an unvalidated address over ``unvalidated_reply_rate``
    #: (RFC 9000 §8.1: an unproven address must not drive our sending).
    unvalidated_replies_dropped: int = 0
    retries_sent: int = 0
    retries_received: int = 0
    #: Not sent: a request (or its repeat) to a peer IP that never answered, over
    #: ``unproven_request_sends`` (RFC 9000 §8.1); the request waits for its timer.
    requests_held: int = 0
    #: Dropped: a RETRY for no unanswered request of ours to that address, or with the
    #: token we just sent (RFC 9000 §17.2.5.2 discards such Retry packets).
    retries_ignored: int = 0
    duplicate_requests: int = 0
    #: Dropped: the control queue was full (the shell is not draining it).
    control_queue_overflow: int = 0
    #: Dropped: a discovery datagram (handled by the discovery machine, not here).
    discovery_datagrams: int = 0
    chunks_corrupted: int = 0
    transfers_timed_out: int = 0
    #: Timer wake-ups late by more than ``stall_threshold`` (this process did not run):
    #: silence was judged again ``stall_grace`` later instead.
    stalled_wakeups: int = 0
    retransmission_timeouts: int = 0
    congestion_events: int = 0
    #: Losses declared that proved wrong (the original arrived), and reductions undone.
    spurious_losses: int = 0
    #: Tail-loss probes sent (first retransmission-timer expiry, RFC 9002 §6.2).
    probes_sent: int = 0
    congestion_events_undone: int = 0

    def as_dict(self) -> dict[str, int]:
        """All counters by name."""
        return {field.name: getattr(self, field.name) for field in fields(self)}
