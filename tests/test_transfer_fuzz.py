"""Whatever a peer sends, mid-transfer, the engine neither raises nor loses the transfer."""

from __future__ import annotations

import hashlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.core.ids import ContentId
from shoal.protocol.transfer import ChunkReceived, Mode, TransferEngine
from transfer_link import Network

CONTENT_ID = ContentId(hashlib.sha256(b"fuzz").digest())
CHUNK = random.Random(1).randbytes(30_000)


def _capture() -> list[tuple[bytes, bool]]:
    """Every datagram of one real transfer, with whether the sender sent it."""
    network = Network(seed=5, loss=0.1)
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    captured: list[tuple[bytes, bool]] = []

    def record(datagram: bytes, source: object, destination: object) -> bytes:
        captured.append((datagram, source == sender.address))
        return datagram

    network.tap = record
    chunk_hash = sender.serve(CONTENT_ID, 0, CHUNK)
    receiver.engine.request_chunk(
        sender.address, CONTENT_ID, 0, len(CHUNK), chunk_hash, Mode.FOREGROUND, network.now
    )
    network.run(lambda: bool(receiver.events_of(ChunkReceived)))
    return captured


CAPTURED = _capture()


@st.composite
def _hostile_datagrams(draw: st.DrawFn) -> bytes:
    datagram, _ = draw(st.sampled_from(CAPTURED))
    data = bytearray(datagram)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "set", "truncate", "extend"]))
        if action == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and data:
            data[draw(st.integers(0, min(len(data), 40) - 1))] = draw(st.integers(0, 255))
        elif action == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        else:
            data.extend(draw(st.binary(min_size=1, max_size=32)))
    return bytes(data)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(_hostile_datagrams(), min_size=1, max_size=20))
def test_hostile_datagrams_mid_transfer_never_raise_nor_corrupt_the_chunk(
    hostile: list[bytes],
) -> None:
    network = Network(seed=7)
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    chunk_hash = sender.serve(CONTENT_ID, 0, CHUNK)
    receiver.engine.request_chunk(
        sender.address, CONTENT_ID, 0, len(CHUNK), chunk_hash, Mode.FOREGROUND, network.now
    )
    network.run(lambda: receiver.engine.counters.payload_bytes_received > 0)
    # Everything hostile comes from a third address and from the real peers' addresses.
    for index, datagram in enumerate(hostile):
        for target in (receiver, sender):
            source = (sender if target is receiver else receiver).address
            network.inject(datagram, source if index % 2 else ("10.9.9.9", 7000), target)
    network.run(lambda: receiver.engine.active_downloads == 0, timeout=200)
    # A forged datagram may end the transfer (a forged cancel, refusal or version error
    # from the peer's own address), but it can never deliver wrong bytes as verified.
    for event in receiver.events_of(ChunkReceived):
        assert event.data == CHUNK


def test_engine_sees_only_bounded_state_after_a_request_flood() -> None:
    engine = TransferEngine(now=0.0)
    rng = random.Random(3)
    for i in range(5_000):
        datagram, _ = rng.choice(CAPTURED)
        engine.receive_datagram(datagram, (f"10.2.{i % 200}.{i % 13}", 7000), i * 1e-3)
        engine.datagrams_to_send(i * 1e-3)
    assert engine.active_uploads <= engine.config.max_uploads
    assert len(engine._finished_uploads) <= engine.config.recent_requests
