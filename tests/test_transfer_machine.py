"""Hypothesis drives two transfer engines over a lossy, reordering link with a fake clock.

Rules request chunks both ways, cancel some, and deliver, drop, duplicate or hold back
any datagram in flight (reordering), while the clock moves to the next timer or jumps.
After every step: every chunk received has exactly the bytes that were served, a chunk
the sender calls delivered was received, every transfer's state moved only along
``states.py``'s table, and no timer is left in the past after it fired. At the end the
link heals and every transfer must end, exactly once.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    Address,
    ChunkCorrupted,
    ChunkDelivered,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    Mode,
    RefusalReason,
    Role,
    TransferEngine,
    TransferTimedOut,
)
from shoal.protocol.transfer.states import (
    RECEIVE_TRANSITIONS,
    SEND_TRANSITIONS,
    ReceiveState,
    SendState,
)

CONTENT_ID = ContentId(bytes(range(32)))
A: Address = ("10.0.0.1", 7000)
B: Address = ("10.0.0.2", 7000)
START = 1000.0
#: Chunks whose index is this or more are not served: the owner refuses them.
MISSING_FROM = 1000


def _reachable(transitions: Mapping[Any, Mapping[Any, Any]]) -> dict[Any, set[Any]]:
    """For each state, the states the table can move it to in any number of steps."""
    closure: dict[Any, set[Any]] = {}
    for start in transitions:
        seen, todo = {start}, [start]
        while todo:
            for target in transitions[todo.pop()].values():
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        closure[start] = seen
    return closure


REACHABLE = {**_reachable(RECEIVE_TRANSITIONS), **_reachable(SEND_TRANSITIONS)}


class TwoEngines(RuleBasedStateMachine):
    """Engines A and B joined by a link the rules control (see the module docstring)."""

    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed: int) -> None:
        self.now = START
        # Fixed address-validation secrets: every example replays exactly.
        self.engines = {A: TransferEngine(now=START, token_key=seed.to_bytes(16, "big"))}
        self.engines[B] = TransferEngine(now=START, token_key=(seed + 1).to_bytes(16, "big"))
        #: (source, destination, datagram) in flight, oldest first.
        self.in_flight: deque[tuple[Address, Address, bytes]] = deque()
        #: What each owner serves: (owner, chunk index) -> bytes.
        self.served: dict[tuple[Address, int], bytes] = {}
        #: (requester, request ID) -> (owner, chunk index), for every request made.
        self.requests: dict[tuple[Address, int], tuple[Address, int]] = {}
        self.cancelled: set[tuple[Address, int]] = set()
        #: Terminal events seen at the requester, by (requester, request ID).
        self.endings: dict[tuple[Address, int], list[object]] = {}
        self.delivered: list[tuple[Address, ChunkDelivered]] = []
        self.received: set[tuple[Address, int]] = set()
        #: Last state seen of every transfer: ("recv"|"send", engine, request ID).
        self.states: dict[tuple[str, Address, int], ReceiveState | SendState] = {}
        self.next_index = 0
        self.fell_silent = False

    # -- the applications ------------------------------------------------------------

    def _pump(self, address: Address) -> None:
        """Take ``address``'s events (answering requests), then queue what it sends."""
        engine = self.engines[address]
        while (event := engine.next_event()) is not None:
            if isinstance(event, ChunkRequested):
                data = self.served.get((address, event.chunk_index))
                if data is None:
                    engine.refuse_chunk(
                        event.peer, event.request_id, RefusalReason.NOT_FOUND, self.now
                    )
                else:
                    engine.send_chunk(event.peer, event.request_id, data, self.now)
            elif isinstance(event, ChunkDelivered):
                self.delivered.append((address, event))
            elif isinstance(event, ChunkReceived | ChunkRefused | ChunkCorrupted):
                self._ended(address, event.request_id, event)
                if isinstance(event, ChunkReceived):
                    owner, index = self.requests[(address, event.request_id)]
                    # Delivered bytes are the bytes that were sent, bit for bit.
                    assert event.data == self.served[(owner, index)]
                    assert event.peer == owner and event.chunk_index == index
                    self.received.add((owner, event.request_id))
            elif isinstance(event, TransferTimedOut) and event.role is Role.RECEIVER:
                self._ended(address, event.request_id, event)
        for datagram, destination in engine.datagrams_to_send(self.now):
            self.in_flight.append((address, destination, datagram))

    def _ended(self, address: Address, request_id: int, event: object) -> None:
        self.endings.setdefault((address, request_id), []).append(event)

    def _pump_all(self) -> None:
        for address in self.engines:
            self._pump(address)

    # -- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.requests) < 12)
    @rule(
        from_b=st.booleans(),
        # Up to 30 segments: past ack_every_packets (16), so ACKs come mid-chunk too.
        length=st.integers(1, 40_000),
        missing=st.booleans(),
        background=st.booleans(),
    )
    def request(self, from_b: bool, length: int, missing: bool, background: bool) -> None:
        requester, owner = (A, B) if from_b else (B, A)
        index = self.next_index + (MISSING_FROM if missing else 0)
        self.next_index += 1
        data = hashlib.sha256(index.to_bytes(4, "big")).digest() * (length // 32 + 1)
        data = data[:length]
        if not missing:
            self.served[(owner, index)] = data
        mode = Mode.BACKGROUND if background else Mode.FOREGROUND
        request_id = self.engines[requester].request_chunk(
            owner, CONTENT_ID, index, length, hashlib.sha256(data).digest(), mode, self.now
        )
        self.requests[(requester, request_id)] = (owner, index)
        self._pump(requester)

    @precondition(lambda self: bool(self.requests))
    @rule(pick=st.integers(0, 2**16))
    def cancel(self, pick: int) -> None:
        keys = sorted(self.requests)
        requester, request_id = keys[pick % len(keys)]
        if (requester, request_id) in self.endings:
            return
        self.cancelled.add((requester, request_id))
        self.engines[requester].cancel(request_id, self.now)
        self._pump(requester)

    @precondition(lambda self: bool(self.in_flight))
    @rule(pick=st.integers(0, 2**16), fate=st.sampled_from(["deliver", "drop", "twice", "later"]))
    def datagram(self, pick: int, fate: str) -> None:
        # Any datagram in flight, not just the oldest: the link reorders.
        position = pick % len(self.in_flight)
        source, destination, datagram = self.in_flight[position]
        del self.in_flight[position]
        if fate == "later":
            self.in_flight.append((source, destination, datagram))
            return
        if fate == "drop":
            return
        for _ in range(2 if fate == "twice" else 1):
            self.engines[destination].receive_datagram(datagram, source, self.now)
        self._pump(destination)

    @rule(count=st.integers(1, 64))
    def deliver_in_order(self, count: int) -> None:
        """A clean stretch of link: the oldest datagrams arrive as sent."""
        for _ in range(min(count, len(self.in_flight))):
            source, destination, datagram = self.in_flight.popleft()
            self.engines[destination].receive_datagram(datagram, source, self.now)
            self._pump(destination)

    @rule()
    def next_timer(self) -> None:
        """The clock moves to the earliest timer, which fires."""
        timers = [t for t in (e.get_timer() for e in self.engines.values()) if t is not None]
        if timers:
            self._advance(max(self.now, min(timers)))

    @rule(seconds=st.sampled_from([0.0005, 0.002, 0.01, 0.05, 0.3, 1.0]))
    def time_passes(self, seconds: float) -> None:
        self._advance(self.now + seconds)

    @precondition(lambda self: not self.fell_silent)
    @rule()
    def long_silence(self) -> None:
        """Longer than ``idle_timeout`` (once per run, or nothing would ever finish):
        whatever waits on a peer gives up on it."""
        self.fell_silent = True
        self._advance(self.now + self.engines[A].config.idle_timeout + 1.0)

    def _advance(self, now: float) -> None:
        self.now = now
        for address, engine in self.engines.items():
            timer = engine.get_timer()
            if timer is not None and timer <= now:
                engine.handle_timer(now)
            self._pump(address)
            # Fired and flushed: no timer may be left at or before now, or the shell
            # would spin without time moving.
            timer = engine.get_timer()
            assert timer is None or timer > now, (address, timer, now)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def states_move_only_along_the_table(self) -> None:
        if not hasattr(self, "engines"):
            return
        for address, engine in self.engines.items():
            seen: dict[tuple[str, Address, int], ReceiveState | SendState] = {}
            for request_id, download in engine._receiver.downloads.items():
                seen[("recv", address, request_id)] = download.state
            for (peer, request_id), upload in engine._sender.uploads.items():
                seen[("send", address, hash((peer, request_id)))] = upload.state
            for key, state in seen.items():
                before = self.states.get(key)
                if before is not None:
                    assert state in REACHABLE[before], (key, before, state)
                self.states[key] = state

    @invariant()
    def delivered_means_received(self) -> None:
        if not hasattr(self, "engines"):
            return
        for owner, event in self.delivered:
            # The sender believes the chunk arrived only if the requester has it.
            assert (owner, event.request_id) in self.received, event

    @invariant()
    def each_request_ends_at_most_once(self) -> None:
        if not hasattr(self, "engines"):
            return
        for key, events in self.endings.items():
            assert len(events) == 1, (key, events)

    def teardown(self) -> None:
        if not hasattr(self, "engines"):
            return
        # The link heals: everything in flight arrives, timers fire, until all is quiet.
        for _ in range(20_000):
            self.delivered_means_received()
            self.each_request_ends_at_most_once()
            self.states_move_only_along_the_table()
            if self.in_flight:
                self.deliver_in_order(1)
                continue
            timers = [t for t in (e.get_timer() for e in self.engines.values()) if t]
            if not timers:
                break
            self._advance(max(self.now, min(timers)))
        assert not self.in_flight
        for engine in self.engines.values():
            assert engine.active_downloads == 0 and engine.active_uploads == 0
        for key, (owner, index) in self.requests.items():
            if key in self.cancelled and key not in self.endings:
                continue
            # Every request not cancelled ended once: received (with the right bytes,
            # checked as it arrived), refused, or timed out.
            assert len(self.endings.get(key, [])) == 1, (key, owner, index)
            (ending,) = self.endings[key]
            if (owner, index) in self.served:
                # The link loses and reorders but never corrupts or lies: a served chunk
                # arrives, unless its peer went silent for longer than idle_timeout.
                assert isinstance(ending, ChunkReceived | TransferTimedOut), (key, ending)
            if (owner, index) not in self.served:
                assert isinstance(ending, ChunkRefused | TransferTimedOut), (key, ending)


TwoEngines.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_engines = TwoEngines.TestCase
