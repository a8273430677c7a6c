"""Congestion control through a bottleneck: LEDBAT keeps the queue short and yields."""

from __future__ import annotations

from shoal.protocol.transfer import ChunkReceived, Mode, TransferConfig
from test_transfer import CONTENT_ID, _chunks
from transfer_link import Network, Node

#: A 5 MB/s bottleneck with a 0.5 s drop-tail buffer and a 5 ms one-way base delay.
BOTTLENECK = {"delay": 0.005, "rate": 5_000_000.0, "queue_bytes": 2_500_000}
CHUNK = _chunks(1, length=256 * 1024)[0]


def _setup() -> tuple[Network, Node, Node, bytes]:
    network = Network(seed=1, **BOTTLENECK)  # type: ignore[arg-type]
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    chunk_hash = sender.serve(CONTENT_ID, 0, CHUNK)
    return network, receiver, sender, chunk_hash


def _keep_requesting(
    network: Network,
    receiver: Node,
    sender: Node,
    chunk_hash: bytes,
    mode: Mode,
    ids: set[int],
    parallel: int = 4,
) -> None:
    while sum(1 for request_id in ids if request_id in receiver.engine._downloads) < parallel:
        ids.add(
            receiver.engine.request_chunk(
                sender.address, CONTENT_ID, 0, len(CHUNK), chunk_hash, mode, network.now
            )
        )


def _median_queue_delay(mode: Mode, seconds: float) -> tuple[float, float]:
    """Median bottleneck queuing delay over the second half, and payload MB/s."""
    network, receiver, sender, chunk_hash = _setup()
    path = network.path(sender, receiver)
    start = network.now
    ids: set[int] = set()
    samples: list[float] = []
    while network.now < start + seconds:
        # 8 chunks of 256 KiB in flight: enough to fill the 2.5 MB buffer.
        _keep_requesting(network, receiver, sender, chunk_hash, mode, ids, parallel=8)
        network.step()
        if network.now > start + seconds / 2:
            samples.append(max(0.0, path.link_free_at - network.now))
    samples.sort()
    throughput = len(receiver.events_of(ChunkReceived)) * len(CHUNK) / seconds / 1e6
    return samples[len(samples) // 2], throughput


def test_both_modes_hold_the_queue_near_their_target_not_the_buffer() -> None:
    config = TransferConfig()
    background_queue, background_rate = _median_queue_delay(Mode.BACKGROUND, 5.0)
    foreground_queue, foreground_rate = _median_queue_delay(Mode.FOREGROUND, 5.0)
    # RFC 6817 §2.1: LEDBAT adds at most TARGET of queuing delay ...
    assert background_queue < 1.2 * config.ledbat_target_delay
    # ... and the foreground holds its own, higher target, where a loss-based flow
    # would fill the 0.5 s buffer (issue 9: control traffic and other flows keep a
    # short queue) ...
    assert background_queue < foreground_queue < 1.5 * config.foreground_target_delay
    # ... and it still uses the link when nobody else does.
    assert background_rate > 0.8 * BOTTLENECK["rate"] / 1e6
    assert foreground_rate > 0.8 * BOTTLENECK["rate"] / 1e6


def test_background_transfer_yields_to_a_foreground_transfer() -> None:
    network, receiver, sender, chunk_hash = _setup()
    background: set[int] = set()
    foreground: set[int] = set()
    start = network.now
    while network.now < start + 7.0:
        _keep_requesting(network, receiver, sender, chunk_hash, Mode.BACKGROUND, background)
        if network.now > start + 2.0:
            _keep_requesting(network, receiver, sender, chunk_hash, Mode.FOREGROUND, foreground)
        network.step()

    def chunks_between(ids: set[int], begin: float, end: float) -> int:
        return sum(
            1
            for event, when in zip(receiver.events, receiver.event_times, strict=True)
            if isinstance(event, ChunkReceived)
            and event.request_id in ids
            and start + begin < when <= start + end
        )

    # Alone, the background transfer takes the link (5 MB/s = ~19 chunks/s) ...
    assert chunks_between(background, 0.5, 2.0) >= 20
    # ... and once the foreground one has settled in, the background one gives it way.
    later_background = chunks_between(background, 4.0, 7.0)
    later_foreground = chunks_between(foreground, 4.0, 7.0)
    assert later_foreground >= 40
    assert later_background <= 0.1 * later_foreground
