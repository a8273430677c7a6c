"""A receiver that restarts mid-transfer: the sender hears of it and serves the new one."""

from __future__ import annotations

import hashlib
import os

from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    ChunkReceived,
    ChunkRequested,
    Mode,
    RequestCancelled,
    TransferEngine,
)
from shoal_dev.sim.network import SimNetwork

CHUNK = os.urandom(1 << 20)
DIGEST = hashlib.sha256(CHUNK).digest()
CONTENT = ContentId(bytes(32))
PORT = 41802


class Endpoint:
    """An application around one engine: serves CHUNK, records events."""

    def __init__(self, engine: TransferEngine) -> None:
        self.engine = engine
        self.events: list[object] = []

    def poll(self, now: float) -> None:
        while (event := self.engine.next_event()) is not None:
            self.events.append((now, event))
            if isinstance(event, ChunkRequested):
                self.engine.send_chunk(event.peer, event.request_id, CHUNK, now)

    def handle_timer(self, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def has_events(self) -> bool:
        return self.engine.has_events()


def test_a_restarted_receiver_cancels_stale_uploads_and_gets_its_chunk() -> None:
    network = SimNetwork()
    office = network.add_office("b", "10.1.0.0/24", wan_rate=1e6)
    sender_host = network.add_host(office, "10.1.0.1", nic_rate=2e6)
    receiver_host = network.add_host(office, "10.1.0.2", nic_rate=2e6)
    sender = Endpoint(TransferEngine(now=0))
    receiver = Endpoint(TransferEngine(now=0))
    network.bind(sender_host, PORT, sender.engine)
    network.attach(sender_host, sender)
    network.bind(receiver_host, PORT, receiver.engine)
    network.attach(receiver_host, receiver)
    receiver.engine.request_chunk(
        ("10.1.0.1", PORT), CONTENT, 0, len(CHUNK), DIGEST, Mode.FOREGROUND, 0.0
    )
    network.pump(receiver_host)
    network.run(until=0.2)  # half way through (1 MiB at 2 MB/s)
    assert not any(isinstance(event, ChunkReceived) for _, event in receiver.events)

    network.kill(receiver_host)
    restarted = Endpoint(TransferEngine(now=0.2))
    network.restart(receiver_host, {PORT: restarted.engine}, restarted)
    restarted.engine.request_chunk(
        ("10.1.0.1", PORT), CONTENT, 0, len(CHUNK), DIGEST, Mode.FOREGROUND, 0.2
    )
    network.pump(receiver_host)
    network.run(until=3.0)

    cancelled = [now for now, event in sender.events if isinstance(event, RequestCancelled)]
    assert cancelled and cancelled[0] < 0.5, "the stale upload was not cancelled promptly"
    received = [(now, event) for now, event in restarted.events if isinstance(event, ChunkReceived)]
    assert len(received) == 1
    assert received[0][0] < 1.5  # far sooner than the 5 s idle timeout
