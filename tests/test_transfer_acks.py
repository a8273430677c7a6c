"""When the receiver acknowledges: a delayed ACK rides a wake-up the process has anyway."""

from __future__ import annotations

import hashlib

from shoal.core.ids import ContentId
from shoal.protocol.transfer import Mode, TransferConfig, TransferEngine
from shoal.wire import Ack, decode_datagram
from shoal.wire.messages import DATA_HEADER, MAGIC, PROTOCOL_VERSION, MessageType

CONTENT_ID = ContentId(hashlib.sha256(b"package").digest())
SENDER = ("10.0.0.2", 7000)
START = 1000.0


def _receiving(config: TransferConfig) -> tuple[TransferEngine, int, bytes]:
    """An engine that asked SENDER for a 20-segment chunk, and that chunk."""
    engine = TransferEngine(config=config, now=START)
    chunk = bytes(range(256)) * (20 * config.segment_size // 256 + 1)
    chunk = chunk[: 20 * config.segment_size]
    request_id = engine.request_chunk(
        SENDER, CONTENT_ID, 0, len(chunk), hashlib.sha256(chunk).digest(),
        Mode.FOREGROUND, START,
    )  # fmt: skip
    engine.datagrams_to_send(START)
    return engine, request_id, chunk


def _data(request_id: int, segment: int, chunk: bytes, size: int, now: float) -> bytes:
    header = DATA_HEADER.pack(
        MAGIC, PROTOCOL_VERSION, MessageType.DATA, request_id, segment, segment,
        int(now * 1_000_000) & 0xFFFFFFFF,
    )  # fmt: skip
    return header + chunk[segment * size : (segment + 1) * size]


def _acks(datagrams: list[tuple[bytes, object]]) -> list[Ack]:
    return [m for data, _ in datagrams if isinstance(m := decode_datagram(data), Ack)]


def test_a_delayed_ack_goes_with_the_next_wakeup_after_ack_ride_after() -> None:
    config = TransferConfig()
    engine, request_id, chunk = _receiving(config)
    size = config.segment_size
    # A burst of 3 packets, fewer than ack_every_packets: the ACK is delayed.
    for segment in range(3):
        engine.receive_datagram(_data(request_id, segment, chunk, size, START), SENDER, START)
    assert not _acks(engine.datagrams_to_send(START))
    assert engine.get_timer() == START + config.max_ack_delay
    # Woken for something else before ack_ride_after: still delayed.
    early = START + config.ack_ride_after / 2
    assert not _acks(engine.datagrams_to_send(early))
    # Woken again after ack_ride_after (any input: another peer's datagram, a timer):
    # the ACK goes now, covering the burst, and its own wake-up is no longer wanted.
    later = START + config.ack_ride_after
    acks = _acks(engine.datagrams_to_send(later))
    assert [ack.cumulative for ack in acks] == [3]
    timer = engine.get_timer()
    assert timer is None or timer > START + config.max_ack_delay


def test_a_delayed_ack_without_a_wakeup_still_goes_at_max_ack_delay() -> None:
    config = TransferConfig()
    engine, request_id, chunk = _receiving(config)
    engine.receive_datagram(_data(request_id, 0, chunk, config.segment_size, START), SENDER, START)
    assert not _acks(engine.datagrams_to_send(START))
    deadline = engine.get_timer()
    assert deadline == START + config.max_ack_delay
    engine.handle_timer(deadline)
    assert [ack.cumulative for ack in _acks(engine.datagrams_to_send(deadline))] == [1]


def test_ack_ride_after_equal_to_max_ack_delay_keeps_the_timer_rule() -> None:
    config = TransferConfig(ack_ride_after=TransferConfig().max_ack_delay)
    engine, request_id, chunk = _receiving(config)
    engine.receive_datagram(_data(request_id, 0, chunk, config.segment_size, START), SENDER, START)
    almost = START + config.max_ack_delay * 0.99
    assert not _acks(engine.datagrams_to_send(almost))
    assert engine.get_timer() == START + config.max_ack_delay
