"""Every (state, input) pair of both transfer tables, driven through a real engine.

For each pair the table has, the engine is brought to the state by the inputs the table
says lead there and the input is applied the way it happens in life (a datagram, a user
call, a timer): the transfer must land where the table says. For each pair it lacks,
a local input raises ``LocalProtocolError`` and a remote one is counted and ignored,
and the transfer stays where it was; a finished transfer never comes back.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping
from typing import Any, TypeVar

import pytest

from shoal.core.ids import ContentId
from shoal.protocol.transfer import LocalProtocolError, Mode, RefusalReason, TransferEngine
from shoal.protocol.transfer.states import (
    RECEIVE_TRANSITIONS,
    SEND_TRANSITIONS,
    TERMINAL_RECEIVE_STATES,
    TERMINAL_SEND_STATES,
    ReceiveInput,
    ReceiveState,
    SendInput,
    SendState,
)
from shoal.wire import (
    Ack,
    Cancel,
    ChunkRequest,
    Refusal,
    Retry,
    encode_data,
    encode_datagram,
)

PEER = ("10.0.0.9", 7000)
CONTENT_ID = ContentId(bytes(range(32)))
#: Three segments of 1380 bytes, the last one short.
CHUNK = bytes(range(256)) * 11 + bytes(184)
SEGMENT = 1380
START = 100.0

_S = TypeVar("_S")
_I = TypeVar("_I")


def _path_to(transitions: Mapping[_S, Mapping[_I, _S]], start: _S, goal: _S) -> list[_I]:
    """The shortest list of inputs that moves ``start`` to ``goal`` in the table."""
    paths: dict[_S, list[_I]] = {start: []}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        for event, target in transitions[state].items():
            if target not in paths:
                paths[target] = [*paths[state], event]
                todo.append(target)
    return paths[goal]


# -- the receiver ----------------------------------------------------------------------


class Receiving:
    """One engine receiving CHUNK from PEER, driven by hand."""

    def __init__(self) -> None:
        self.engine = TransferEngine(now=START)
        self.now = START
        self.request_id = self.engine.request_chunk(
            PEER, CONTENT_ID, 0, len(CHUNK), hashlib.sha256(CHUNK).digest(), Mode.FOREGROUND, START
        )
        # The peer proves its address once, so that a cancel is sent to it.
        self.engine.receive_datagram(
            encode_datagram(Retry(self.request_id, b"tokentok")), PEER, self.now
        )
        self.engine.datagrams_to_send(self.now)
        self.events: list[Any] = []

    def state(self) -> ReceiveState:
        download = self.engine._receiver.downloads.get(self.request_id)
        if download is not None:
            return download.state
        finished = self.engine._receiver._finished.get(self.request_id)
        assert finished is not None and isinstance(finished.outcome, ReceiveState)
        return finished.outcome

    def segment(self, index: int, payload: bytes = CHUNK) -> None:
        data = payload[index * SEGMENT : (index + 1) * SEGMENT]
        self.now += 0.001
        datagram = encode_data(self.request_id, 10 + index, index, 0, data)
        self.engine.receive_datagram(datagram, PEER, self.now)
        self._collect()

    def _collect(self) -> None:
        while (event := self.engine.next_event()) is not None:
            self.events.append(event)

    def apply(self, event: ReceiveInput) -> None:
        """``event`` as it happens in life."""
        if event is ReceiveInput.DATA_ARRIVED:
            self.segment(0)
        elif event in (ReceiveInput.CHUNK_VERIFIED, ReceiveInput.CHUNK_MISMATCHED):
            payload = CHUNK if event is ReceiveInput.CHUNK_VERIFIED else bytes(len(CHUNK))
            for index in range(3):
                self.segment(index, payload)
        elif event is ReceiveInput.REFUSAL_ARRIVED:
            refusal = Refusal(self.request_id, RefusalReason.NOT_FOUND)
            self.engine.receive_datagram(encode_datagram(refusal), PEER, self.now)
        elif event is ReceiveInput.PEER_SILENT:
            self.now = _run_timers(self.engine, self.now + self.engine.config.idle_timeout + 1)
        else:
            self.engine.cancel(self.request_id, self.now)
        self._collect()


@pytest.mark.parametrize("event", list(ReceiveInput), ids=lambda e: e.name)
@pytest.mark.parametrize("state", list(ReceiveState), ids=lambda s: s.name)
def test_every_receive_pair(state: ReceiveState, event: ReceiveInput) -> None:
    receiving = Receiving()
    for step in _path_to(RECEIVE_TRANSITIONS, ReceiveState.REQUESTED, state):
        receiving.apply(step)
    assert receiving.state() is state
    target = RECEIVE_TRANSITIONS[state].get(event)
    if target is not None:
        receiving.apply(event)
        assert receiving.state() is target
    elif state in TERMINAL_RECEIVE_STATES:
        events_before = len(receiving.events)
        receiving.apply(event)
        # Late datagrams, a late timer or cancel: nothing moves, nothing is reported.
        assert receiving.state() is state
        assert receiving.engine.active_downloads == 0
        assert len(receiving.events) == events_before
    else:
        # A move only the engine itself makes (the hash check of a complete chunk);
        # asked for out of turn, it is refused as a programming error.
        download = receiving.engine._receiver.downloads[receiving.request_id]
        with pytest.raises(LocalProtocolError):
            receiving.engine._receiver._move(download, event)
        assert receiving.state() is state


# -- the sender ------------------------------------------------------------------------


class Sending:
    """One engine asked by PEER for CHUNK, driven by hand."""

    REQUEST_ID = 77

    def __init__(self) -> None:
        self.engine = TransferEngine(now=START)
        self.now = START
        token = self.engine.address_token(PEER, START)
        request = ChunkRequest(
            self.REQUEST_ID, CONTENT_ID, 0, len(CHUNK), Mode.FOREGROUND, SEGMENT, 64, token
        )
        self.engine.receive_datagram(encode_datagram(request), PEER, START)
        self.events = [self.engine.next_event()]
        self.sent_packets = 0

    def state(self) -> SendState:
        upload = self.engine._sender.uploads.get((PEER, self.REQUEST_ID))
        if upload is not None:
            return upload.state
        finished = self.engine._sender._finished.get((PEER, self.REQUEST_ID))
        assert finished is not None and isinstance(finished.outcome, SendState)
        return finished.outcome

    def apply(self, event: SendInput) -> None:
        engine = self.engine
        if event is SendInput.APPLICATION_SENT:
            engine.send_chunk(PEER, self.REQUEST_ID, CHUNK, self.now)
            sent = engine.datagrams_to_send(self.now)
            self.sent_packets += sum(1 for datagram, _ in sent if datagram[3] == 0x02)
        elif event is SendInput.APPLICATION_REFUSED:
            engine.refuse_chunk(PEER, self.REQUEST_ID, RefusalReason.NOT_FOUND, self.now)
        elif event is SendInput.APPLICATION_WITHDREW:
            engine.withdraw_chunk(PEER, self.REQUEST_ID, RefusalReason.BUSY, self.now)
        elif event is SendInput.ALL_ACKNOWLEDGED:
            self.now += 0.001
            ack = Ack(self.REQUEST_ID, max(self.sent_packets - 1, 0), 0, 0, 3, 64)
            engine.receive_datagram(encode_datagram(ack), PEER, self.now)
        elif event is SendInput.PEER_CANCELLED:
            engine.receive_datagram(encode_datagram(Cancel(self.REQUEST_ID)), PEER, self.now)
        else:
            self.now = _run_timers(engine, self.now + engine.config.idle_timeout + 1)
        while (happened := engine.next_event()) is not None:
            self.events.append(happened)


_LOCAL_SEND_INPUTS = {
    SendInput.APPLICATION_SENT,
    SendInput.APPLICATION_REFUSED,
    SendInput.APPLICATION_WITHDREW,
}


@pytest.mark.parametrize("event", list(SendInput), ids=lambda e: e.name)
@pytest.mark.parametrize("state", list(SendState), ids=lambda s: s.name)
def test_every_send_pair(state: SendState, event: SendInput) -> None:
    sending = Sending()
    for step in _path_to(SEND_TRANSITIONS, SendState.AWAITING_APPLICATION, state):
        sending.apply(step)
    assert sending.state() is state
    target = SEND_TRANSITIONS[state].get(event)
    counters = sending.engine.counters
    if target is not None:
        sending.apply(event)
        assert sending.state() is target
    elif state in TERMINAL_SEND_STATES:
        events_before = len(sending.events)
        # The application answering a request that ended meanwhile is a race, not a
        # bug: ignored, like every late datagram and timer.
        sending.apply(event)
        assert sending.state() is state
        assert sending.engine.active_uploads == 0
        assert len(sending.events) == events_before
    elif event in _LOCAL_SEND_INPUTS:
        with pytest.raises(LocalProtocolError):
            sending.apply(event)
        assert sending.state() is state
    else:
        # An ACK for data never sent: the peer's mistake, counted and dropped.
        invalid_before = counters.invalid_acks
        sending.apply(event)
        assert counters.invalid_acks == invalid_before + 1
        assert sending.state() is state


def _run_timers(engine: TransferEngine, until: float) -> float:
    """Wake ``engine`` at each of its deadlines up to ``until`` (on time: a wake-up much
    later than its deadline is a stalled process, ``TransferConfig.stall_threshold``)."""
    while (deadline := engine.get_timer()) is not None and deadline <= until:
        engine.handle_timer(deadline)
        engine.datagrams_to_send(deadline)
    return until
