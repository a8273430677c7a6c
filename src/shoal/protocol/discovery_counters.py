"""What a discovery machine counts (``DiscoveryMachine.counters``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class DiscoveryCounters:
    queries_sent: int = 0
    queries_answered: int = 0
    answers_received: int = 0
    pushes_sent: int = 0
    out_of_scope: int = 0
    own_datagrams: int = 0
    wrong_magic: int = 0
    unsupported_version: int = 0
    malformed: int = 0
    unexpected: int = 0
    events_dropped: int = 0
    #: Not sent: more than 3x what an unvalidated address sent us (RFC 9000 §8.1).
    amplification_limited: int = 0
    #: Queries that proved their source address (a valid echoed token), and echoes sent.
    addresses_validated: int = 0
    echoes_sent: int = 0
    #: Dropped: the interest table of a content is full of live interest.
    interest_dropped: int = 0
    #: Queries left to other holders (``DiscoveryConfig.answers_per_query``).
    answers_suppressed: int = 0
