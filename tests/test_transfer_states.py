"""The transition tables, and what the engine does with moves they do not allow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    ChunkRequested,
    LocalProtocolError,
    Mode,
    RefusalReason,
    RequestCancelled,
    TransferEngine,
)
from shoal.protocol.transfer.states import (
    RECEIVE_TRANSITIONS,
    SEND_TRANSITIONS,
    TERMINAL_RECEIVE_STATES,
    TERMINAL_SEND_STATES,
    ReceiveState,
    SendState,
)
from shoal.wire import Cancel, ChunkRequest, encode_datagram

PEER = ("10.0.0.7", 7000)
CONTENT_ID = ContentId(bytes(32))


def _reachable(transitions: Mapping[Any, Mapping[Any, Any]], start: object) -> set[object]:
    seen, todo = {start}, [start]
    while todo:
        for target in transitions[todo.pop()].values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_every_state_is_reachable_and_every_path_ends() -> None:
    assert _reachable(RECEIVE_TRANSITIONS, ReceiveState.REQUESTED) == set(ReceiveState)
    assert _reachable(SEND_TRANSITIONS, SendState.AWAITING_APPLICATION) == set(SendState)
    assert {
        ReceiveState.RECEIVED,
        ReceiveState.CORRUPTED,
        ReceiveState.REFUSED,
        ReceiveState.TIMED_OUT,
        ReceiveState.CANCELLED,
    } == TERMINAL_RECEIVE_STATES
    assert SendState.SENDING not in TERMINAL_SEND_STATES


def _requested(engine: TransferEngine, request_id: int = 1) -> ChunkRequested:
    token = engine.address_token(PEER, 0.0)
    request = ChunkRequest(request_id, CONTENT_ID, 0, 5000, Mode.FOREGROUND, 1380, 64, token)
    engine.receive_datagram(encode_datagram(request), PEER, 0.0)
    event = engine.next_event()
    assert isinstance(event, ChunkRequested)
    return event


def test_answering_a_request_twice_is_a_local_error() -> None:
    engine = TransferEngine(now=0.0)
    event = _requested(engine)
    engine.send_chunk(PEER, event.request_id, bytes(5000), 0.0)
    with pytest.raises(LocalProtocolError):
        engine.send_chunk(PEER, event.request_id, bytes(5000), 0.0)
    with pytest.raises(LocalProtocolError):
        engine.refuse_chunk(PEER, event.request_id, RefusalReason.BUSY, 0.0)


def test_serving_the_wrong_length_or_an_unknown_request_is_a_local_error() -> None:
    engine = TransferEngine(now=0.0)
    event = _requested(engine)
    with pytest.raises(LocalProtocolError):
        engine.send_chunk(PEER, event.request_id, bytes(4999), 0.0)
    with pytest.raises(LocalProtocolError):
        engine.send_chunk(PEER, event.request_id + 1, bytes(5000), 0.0)


def test_answering_a_request_the_peer_cancelled_meanwhile_is_ignored() -> None:
    engine = TransferEngine(now=0.0)
    event = _requested(engine)
    engine.receive_datagram(encode_datagram(Cancel(event.request_id)), PEER, 0.0)
    assert isinstance(engine.next_event(), RequestCancelled)
    engine.send_chunk(PEER, event.request_id, bytes(5000), 0.0)  # a race, not a bug
    assert engine.datagrams_to_send(0.0) == []
    assert engine.active_uploads == 0


def test_a_repeated_request_is_answered_once() -> None:
    engine = TransferEngine(now=0.0)
    _requested(engine)
    token = engine.address_token(PEER, 0.1)
    request = ChunkRequest(1, CONTENT_ID, 0, 5000, Mode.FOREGROUND, 1380, 64, token)
    engine.receive_datagram(encode_datagram(request), PEER, 0.1)
    assert engine.next_event() is None
    assert engine.counters.duplicate_requests == 1


def test_a_chunk_index_beyond_the_content_is_refused_and_counted() -> None:
    engine = TransferEngine(now=0.0)
    token = engine.address_token(PEER, 0.0)
    request = ChunkRequest(9, CONTENT_ID, 4_000_000, 5000, Mode.FOREGROUND, 1380, 64, token)
    engine.receive_datagram(encode_datagram(request), PEER, 0.0)
    event = engine.next_event()
    assert isinstance(event, ChunkRequested) and event.chunk_index == 4_000_000
    # Only the application knows how many chunks the content has.
    engine.refuse_chunk(PEER, event.request_id, RefusalReason.INVALID_REQUEST, 0.0)
    assert engine.counters.requests_invalid == 1
    assert engine.counters.requests_refused == 1
    assert engine.datagrams_to_send(0.0) == [(b"SH\x02\x04\x00\x00\x00\x09\x03", PEER)]
