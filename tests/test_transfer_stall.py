"""A CPU-starved host does not abandon a transfer that is still making progress.

On a loaded machine (issue 9: branch-flash at load 16 sent 1.125 F over the WAN) a
process may not run for seconds. When it runs again, its timers fire late, before the
shell has read what its peers sent meanwhile. Judged then, a peer looks silent and its
transfer is abandoned and asked for again from scratch: a second copy of the chunk over
the WAN. Silence is judged only once this process has listened (``stall_threshold``,
``stall_grace``); a peer that is really silent still times out.
"""

from __future__ import annotations

import hashlib

from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    ChunkReceived,
    ChunkRequested,
    Mode,
    TransferConfig,
    TransferEngine,
    TransferTimedOut,
)

SERVER = ("10.0.0.2", 4000)
CLIENT = ("10.1.0.5", 4001)
CONTENT = ContentId(hashlib.sha256(b"package").digest())
CHUNK = bytes(range(256)) * 4096  # 1 MiB


class Pair:
    """A server engine and a client engine, datagrams moved by hand; the client's
    socket buffer holds what reaches it while it does not run."""

    def __init__(self) -> None:
        self.config = TransferConfig()
        self.server = TransferEngine(config=self.config, now=0.0)
        self.client = TransferEngine(config=self.config, now=0.0)
        self.client_socket: list[bytes] = []
        self.requested: list[ChunkRequested] = []
        self.client_events: list[object] = []

    def run_server(self, now: float) -> None:
        timer = self.server.get_timer()
        if timer is not None and timer <= now:
            self.server.handle_timer(now)
        while (event := self.server.next_event()) is not None:
            if isinstance(event, ChunkRequested):
                self.requested.append(event)
                self.server.send_chunk(event.peer, event.request_id, CHUNK, now)
        for data, addr in self.server.datagrams_to_send(now):
            assert addr == CLIENT
            self.client_socket.append(data)

    def run_client(self, now: float, *, timers_first: bool = True) -> None:
        timer = self.client.get_timer()
        if timers_first and timer is not None and timer <= now:
            self.client.handle_timer(now)  # a late wake-up: the timer before the socket
        for data in self.client_socket:
            self.client.receive_datagram(data, SERVER, now)
        self.client_socket.clear()
        timer = self.client.get_timer()
        if timer is not None and timer <= now:
            self.client.handle_timer(now)
        while (event := self.client.next_event()) is not None:
            self.client_events.append(event)
        for data, addr in self.client.datagrams_to_send(now):
            assert addr == SERVER
            self.server.receive_datagram(data, CLIENT, now)

    def both(self, start: float, end: float, step: float = 0.001) -> float:
        now = start
        while now < end:
            self.run_client(now)
            self.run_server(now)
            now += step
        return now

    def of(self, kind: type) -> list[object]:
        return [event for event in self.client_events if isinstance(event, kind)]


def _start(pair: Pair) -> None:
    pair.client.request_chunk(
        SERVER, CONTENT, 0, len(CHUNK), hashlib.sha256(CHUNK).digest(), Mode.FOREGROUND, 0.0
    )
    pair.both(0.0, 0.02)  # address validation, then the first windows of data
    assert len(pair.requested) == 1 and not pair.of(ChunkReceived)


def test_a_late_wakeup_does_not_abandon_a_transfer_still_in_progress() -> None:
    pair = Pair()
    _start(pair)
    # The server does not run for 3 s (the client hears nothing), then sends again
    # while the client does not run (from 2.9 s to 6.5 s): the client's silence
    # deadline (its last datagram + 5 s) passes while the server's data waits unread.
    now = 0.02
    while now < 2.9:
        pair.run_client(now)
        now += 0.01
    pair.client_socket.clear()
    for tick in range(300):
        pair.run_server(3.0 + tick * 0.01)  # it sends on, the client does not ack yet
    assert pair.client_socket, "the server sent while the client was stalled"
    pair.run_client(6.5)  # late by 1.5 s: the timer comes before the socket is read
    assert not pair.of(TransferTimedOut), "a transfer still sending was abandoned"
    pair.both(6.5, 9.0)
    assert len(pair.of(ChunkReceived)) == 1
    assert len(pair.requested) == 1, "the chunk was asked for, and sent, twice"
    assert pair.client.counters.stalled_wakeups >= 1


def test_a_peer_silent_through_our_stall_still_times_out() -> None:
    pair = Pair()
    _start(pair)
    pair.client_socket.clear()
    pair.run_client(8.0)  # late by ~3 s, and the server sent nothing since 0.02 s
    assert not pair.of(TransferTimedOut)  # judged once we listened...
    now = 8.0
    while not pair.of(TransferTimedOut) and now < 8.0 + 2 * pair.config.stall_grace:
        now += 0.01
        pair.run_client(now)
    assert len(pair.of(TransferTimedOut)) == 1  # ...and then it is silent: given up
    assert now - 8.0 <= pair.config.stall_grace + 0.02


def test_on_time_wakeups_judge_silence_as_before() -> None:
    pair = Pair()
    _start(pair)
    now = 0.02
    while not pair.of(TransferTimedOut) and now < 10.0:
        now += 0.01
        pair.run_client(now)  # the server has stopped: nothing reaches the client
    assert pair.of(TransferTimedOut)
    assert now <= 0.02 + pair.config.idle_timeout + 0.02
    assert pair.client.counters.stalled_wakeups == 0
