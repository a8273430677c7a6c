"""What the agent counts: served bytes, refusals by cause, bad peers, refused documents."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class AgentCounters:
    chunks_served: int = 0
    bytes_served: int = 0
    requests_refused: int = 0
    #: Refused: not a peer of our office, or content not assigned to us (issue 13).
    requests_refused_policy: int = 0
    #: Refused BUSY: every upload slot taken and as many requests waiting (UploadSlots).
    requests_refused_busy: int = 0
    #: Of those, refused because the peer already had its turn (or sits out a penalty).
    requests_refused_busy_turn: int = 0
    bad_chunks: int = 0
    peers_banned: int = 0
    store_errors: int = 0
    documents_refused: int = 0
    #: Assignment documents taken from the copy an earlier process kept, not fetched.
    documents_kept: int = 0
    rotations_ignored: int = 0
    #: Server answers for a download that had moved on (a late lease or manifest reply).
    stale_answers: int = 0
