"""Whatever a peer sends, mid-transfer, the engine neither raises nor loses the transfer."""

from __future__ import annotations

import hashlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.protocol.discovery import DiscoveryConfig, DiscoveryMachine
from shoal.protocol.transfer import ChunkReceived, ChunkRequested, Mode, TransferEngine
from shoal.wire import Have, Retry, VersionError, WhoHas, encode_datagram
from shoal.wire.messages import MAX_HAVE_CHUNKS
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
    assert len(engine._sender._finished) <= engine.config.recent_requests


# -- every UDP parser, 10,000 examples each (issue 13): never raise, never amplify ---------

_FUZZ_10K = settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STRANGER = ("10.1.0.66", 41000)


def _discovery_samples() -> list[bytes]:
    content = ContentId(bytes(range(32)))
    return [
        encode_datagram(WhoHas(1, content)),
        encode_datagram(WhoHas(2, content, b"t" * 8, 40)),
        encode_datagram(Have(3, content, ChunkSet(20, [1, 5]), b"t" * 8)),
        encode_datagram(Have(0, content, ChunkSet.full(MAX_HAVE_CHUNKS))),
        encode_datagram(Retry(4, b"t" * 8)),
        encode_datagram(VersionError(2, 2)),
    ]


SAMPLES = [datagram for datagram, _ in CAPTURED] + _discovery_samples()


def _mutate(sample: bytes, program: bytes) -> bytes:
    """Apply a mutation program (two bytes per step: what, where or with what) to a
    sample: two draws per example, so 10,000 examples stay quick to generate."""
    data = bytearray(sample)
    for step in range(0, len(program) - 1, 2):
        action, argument = program[step] % 5, program[step + 1]
        if action == 0 and data:
            data[argument % len(data)] ^= 1 << (argument % 8)
        elif action == 1 and data:
            data[argument % min(len(data), 60)] = program[step]
        elif action == 2:
            del data[argument % (len(data) + 1) :]
        elif action == 3:
            data.extend(program[step:])
        else:
            data = bytearray(program)  # raw bytes, no sample at all
    return bytes(data)


_ANY_DATAGRAM = st.builds(_mutate, st.sampled_from(SAMPLES), st.binary(max_size=8))


class _Machines:
    """One engine (a download under way) and one discovery machine (holding and searching
    a 10 GiB package), long-lived as on a real port; each example comes from a new
    address, so that the 3x bound is checked against that datagram alone."""

    def __init__(self) -> None:
        self.content = ContentId(bytes(range(32)))
        self.engine = TransferEngine(now=0.0)
        self.engine.request_chunk(
            ("10.1.0.2", 7000), CONTENT_ID, 0, len(CHUNK), bytes(32), Mode.FOREGROUND, 0.0
        )
        config = DiscoveryConfig(41800, "10.1.0.255", ("10.0.0.0/8",), ("10.1.0.1",))
        self.discovery = DiscoveryMachine(config, now=0.0)
        self.discovery.set_holding(self.content, ChunkSet(MAX_HAVE_CHUNKS, [0, 7]), 0.0)
        self.discovery.search(self.content, 0.0, unicast_peers=[])
        self.examples = 0

    def next_stranger(self) -> tuple[str, int]:
        self.examples += 1
        number = self.examples
        return (f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}", 41000)


_MACHINES = _Machines()


@_FUZZ_10K
@given(_ANY_DATAGRAM)
def test_data_and_discovery_parsers_take_anything_and_answer_a_stranger_within_3x(
    datagram: bytes,
) -> None:
    """10,000 examples for each of the engine's and discovery's receive_datagram."""
    machines = _MACHINES
    stranger = machines.next_stranger()
    now = machines.examples * 0.01
    engine, discovery = machines.engine, machines.discovery
    engine.receive_datagram(datagram, stranger, now)
    while (event := engine.next_event()) is not None:
        if isinstance(event, ChunkRequested):
            engine.send_chunk(event.peer, event.request_id, bytes(event.chunk_length), now)
    engine.handle_timer(now)
    sent = sum(len(d) for d, a in engine.datagrams_to_send(now) if a == stranger)
    assert sent <= 3 * len(datagram)
    discovery.receive_datagram(datagram, stranger, now)
    discovery.chunk_added(machines.content, 9 + machines.examples % 5000, MAX_HAVE_CHUNKS, now)
    discovery.handle_timer(now + 0.05)
    sent = sum(len(d) for d, a in discovery.datagrams_to_send(now + 0.05) if a == stranger)
    assert sent <= 3 * len(datagram)
    while discovery.next_event() is not None:
        pass
