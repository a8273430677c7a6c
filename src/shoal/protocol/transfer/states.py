"""Every state a transfer can be in, and every transition, as data.

Theory of operation
-------------------
A transfer is one chunk moving from a sender to a receiver, named by the request ID the
receiver chose. Each end keeps its own small machine:

Receiver (the end that called ``request_chunk``)::

    REQUESTED --data--> RECEIVING --last segment, hash ok--> RECEIVED
        |                   |      --last segment, hash bad-> CORRUPTED
        +--refusal / version error / silence / user cancel--> REFUSED / TIMED_OUT / CANCELLED

While REQUESTED the receiver repeats its request on the retransmission timer; once data
flows it only acknowledges.

Sender (the end that got ``ChunkRequested``)::

    AWAITING_APPLICATION --send_chunk--> SENDING --every segment acknowledged--> DELIVERED
        |                                   |
        +--refuse_chunk--> REFUSED          +--peer cancel / silence--> CANCELLED / TIMED_OUT
                                            +--withdraw_chunk--> REFUSED

``withdraw_chunk`` ends a chunk under way (the P2P server stops what it still sends a
peer its office has just banned); the receiver hears a refusal, which it takes in
RECEIVING as in REQUESTED.

Terminal states leave the engine's tables at once; the engine remembers the outcome of
recent request IDs only to answer late datagrams about them (a repeated final ACK, a
repeated refusal or cancel).

A pair (state, input) missing from the tables is an error: a local one (the application
called ``send_chunk`` twice) raises ``LocalProtocolError``; a remote one is counted and
the datagram dropped.
"""

from __future__ import annotations

import enum

from shoal.core.errors import ShoalError


class LocalProtocolError(ShoalError):
    """The application used the engine wrongly (a programming mistake, not the peer's)."""


class TooManyDownloads(LocalProtocolError):
    """``request_chunk`` while ``max_downloads`` chunks are already being received."""


class ReceiveState(enum.Enum):
    REQUESTED = "requested"
    RECEIVING = "receiving"
    RECEIVED = "received"
    CORRUPTED = "corrupted"
    REFUSED = "refused"
    TIMED_OUT = "timed out"
    CANCELLED = "cancelled"


class ReceiveInput(enum.Enum):
    DATA_ARRIVED = "data arrived"
    CHUNK_VERIFIED = "chunk verified"
    CHUNK_MISMATCHED = "chunk mismatched"
    REFUSAL_ARRIVED = "refusal arrived"
    PEER_SILENT = "peer silent"
    USER_CANCELLED = "user cancelled"


class SendState(enum.Enum):
    AWAITING_APPLICATION = "awaiting application"
    SENDING = "sending"
    DELIVERED = "delivered"
    REFUSED = "refused"
    TIMED_OUT = "timed out"
    CANCELLED = "cancelled"


class SendInput(enum.Enum):
    APPLICATION_SENT = "application sent"
    APPLICATION_REFUSED = "application refused"
    APPLICATION_WITHDREW = "application withdrew"
    ALL_ACKNOWLEDGED = "all acknowledged"
    PEER_CANCELLED = "peer cancelled"
    PEER_SILENT = "peer silent"


RECEIVE_TRANSITIONS: dict[ReceiveState, dict[ReceiveInput, ReceiveState]] = {
    ReceiveState.REQUESTED: {
        ReceiveInput.DATA_ARRIVED: ReceiveState.RECEIVING,
        ReceiveInput.REFUSAL_ARRIVED: ReceiveState.REFUSED,
        ReceiveInput.PEER_SILENT: ReceiveState.TIMED_OUT,
        ReceiveInput.USER_CANCELLED: ReceiveState.CANCELLED,
    },
    ReceiveState.RECEIVING: {
        ReceiveInput.DATA_ARRIVED: ReceiveState.RECEIVING,
        ReceiveInput.CHUNK_VERIFIED: ReceiveState.RECEIVED,
        ReceiveInput.CHUNK_MISMATCHED: ReceiveState.CORRUPTED,
        ReceiveInput.REFUSAL_ARRIVED: ReceiveState.REFUSED,
        ReceiveInput.PEER_SILENT: ReceiveState.TIMED_OUT,
        ReceiveInput.USER_CANCELLED: ReceiveState.CANCELLED,
    },
    ReceiveState.RECEIVED: {},
    ReceiveState.CORRUPTED: {},
    ReceiveState.REFUSED: {},
    ReceiveState.TIMED_OUT: {},
    ReceiveState.CANCELLED: {},
}

SEND_TRANSITIONS: dict[SendState, dict[SendInput, SendState]] = {
    SendState.AWAITING_APPLICATION: {
        SendInput.APPLICATION_SENT: SendState.SENDING,
        SendInput.APPLICATION_REFUSED: SendState.REFUSED,
        SendInput.PEER_CANCELLED: SendState.CANCELLED,
        SendInput.PEER_SILENT: SendState.TIMED_OUT,
    },
    SendState.SENDING: {
        SendInput.ALL_ACKNOWLEDGED: SendState.DELIVERED,
        SendInput.APPLICATION_WITHDREW: SendState.REFUSED,
        SendInput.PEER_CANCELLED: SendState.CANCELLED,
        SendInput.PEER_SILENT: SendState.TIMED_OUT,
    },
    SendState.DELIVERED: {},
    SendState.REFUSED: {},
    SendState.TIMED_OUT: {},
    SendState.CANCELLED: {},
}

TERMINAL_RECEIVE_STATES = frozenset(s for s, moves in RECEIVE_TRANSITIONS.items() if not moves)
TERMINAL_SEND_STATES = frozenset(s for s, moves in SEND_TRANSITIONS.items() if not moves)


def next_receive_state(state: ReceiveState, event: ReceiveInput) -> ReceiveState | None:
    """The state after ``event``, or None when the table has no such move."""
    return RECEIVE_TRANSITIONS[state].get(event)


def next_send_state(state: SendState, event: SendInput) -> SendState | None:
    """The state after ``event``, or None when the table has no such move."""
    return SEND_TRANSITIONS[state].get(event)
