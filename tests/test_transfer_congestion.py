"""Congestion control through a bottleneck: LEDBAT keeps the queue short and yields."""

from __future__ import annotations

import hashlib

import pytest

from shoal.protocol.transfer import ChunkReceived, DelayReno, Ledbat, Mode, TransferConfig
from shoal.wire.messages import (
    DATA_HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    Ack,
    MessageType,
    decode_datagram,
)
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
    while (
        sum(1 for request_id in ids if request_id in receiver.engine._receiver.downloads) < parallel
    ):
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


# ------------------------------------------------------------------------------------
# The controllers alone, driven by a fake clock and synthetic delay samples
# ------------------------------------------------------------------------------------

#: One-way delay on an empty path, microseconds (only changes to it mean anything).
BASE_US = 7_000


def _ack_round(
    cc: DelayReno | Ledbat, now: float, queue_ms: float, per_ack: int = 16, rounds: int = 1,
    srtt: float = 0.0,
) -> None:  # fmt: skip
    """Acknowledge ``rounds`` windows, ``per_ack`` packets per ACK, the window in use."""
    for _ in range(rounds):
        acks = max(1, int(cc.cwnd) // per_ack)
        for _ in range(acks):
            in_flight = max(0, int(cc.cwnd) - per_ack)
            cc.on_ack(per_ack, in_flight, now, BASE_US + int(queue_ms * 1000), srtt=srtt)


def _config(**settings: float) -> TransferConfig:
    return TransferConfig(**settings)  # type: ignore[arg-type]


def test_foreground_slow_starts_on_an_empty_path_and_stops_at_half_its_target() -> None:
    cc = DelayReno(_config())
    _ack_round(cc, 0.0, 0.0)
    start = cc.cwnd
    for step in range(4):
        _ack_round(cc, 0.1 * (step + 1), 0.0)
    assert cc.cwnd >= 8 * start  # doubling per round trip
    assert cc.in_slow_start
    target_ms = cc.target_us / 1000
    _ack_round(cc, 0.6, target_ms * 0.6)
    assert not cc.in_slow_start


def test_foreground_backs_off_above_its_target_at_most_halving_per_round_trip() -> None:
    cc = DelayReno(_config())
    _ack_round(cc, 0.0, 0.0)
    cc.cwnd = cc.ssthresh = 400.0
    target_ms = cc.target_us / 1000
    _ack_round(cc, 1.0, 4 * target_ms)  # far above target: LEDBAT++ §4.3 caps at -W/2
    assert 190 <= cc.cwnd <= 260
    before = cc.cwnd
    _ack_round(cc, 1.1, target_ms * 0.5)  # below target: grows again
    assert cc.cwnd > before


def test_foreground_competes_only_when_someone_else_holds_the_queue() -> None:
    config = _config()
    cc = DelayReno(config)
    _ack_round(cc, 0.0, 0.0)
    cc.cwnd = cc.ssthresh = 100.0
    target_ms = cc.target_us / 1000
    # Its own equilibrium sits a little above TARGET: that is never a competitor.
    for step in range(100):
        _ack_round(cc, 0.1 * step, target_ms * 1.3)
    assert not cc.competing
    # A queue at 4x TARGET that stays however far the window goes down is one.
    now = 10.0
    while now < 10.0 + config.foreground_compete_after - 0.2:
        _ack_round(cc, now, target_ms * 4)
        now += 0.1
    assert not cc.competing
    # (The current-delay filter, RFC 6817 §3.4.2, takes 4 samples to see the queue.)
    _ack_round(cc, now + 0.6, target_ms * 4)
    assert cc.competing
    # Competing, it follows CUBIC (RFC 9438): a loss episode leaves 0.7 of the window.
    window = cc.cwnd = cc.ssthresh = 50.0
    _ack_round(cc, now + 0.4, target_ms * 4, per_ack=1)
    assert window < cc.cwnd
    grown = cc.cwnd
    assert cc.loss_is_congestion(lost=1, sent=1000)
    cc.on_congestion(now + 0.5)
    assert cc.cwnd == pytest.approx(0.7 * grown)


def test_competing_foreground_takes_a_tcp_share_behind_a_deep_queue() -> None:
    """Alone on a 100 ms path the flow carries 1000 packets/s; a CUBIC flow then fills a
    deep buffer (round trip 700 ms). Competing, it starts from the window that carries
    its rate at the new round trip (what a TCP flow that had the link would hold), not
    from what backing off left, and grows by CUBIC's clock, not a packet per round trip."""
    config = _config()
    cc = DelayReno(config)
    cc.on_ack(1, 0, 0.0, BASE_US, srtt=0.1)  # the base delay
    cc.cwnd = cc.ssthresh = 100.0
    target_ms = cc.target_us / 1000
    for step in range(20):
        _ack_round(cc, 0.1 * step, target_ms * 0.9, srtt=0.1)
    assert 100 <= cc.cwnd < 120  # at rest near its target
    assert cc.rate_at_rest == pytest.approx(cc.cwnd / 0.1, rel=0.02)
    now = 2.0
    while not cc.competing:  # the queue rises to 600 ms; the window backs off meanwhile
        _ack_round(cc, now, 600.0, srtt=0.7)
        now += 0.1
    assert cc.cwnd >= 0.7 * 1000 * 0.7 * 0.95  # BETA x (rate x new round trip)
    start = cc.cwnd
    for second in range(10):
        _ack_round(cc, now + second, 600.0, srtt=0.7)
    # NewReno would add ~14 packets in these 10 s (one per 700 ms round trip).
    assert cc.cwnd > start + 100


def test_competing_foreground_slows_down_to_find_out_whether_the_competitor_left() -> None:
    config = _config()
    cc = DelayReno(config)
    _ack_round(cc, 0.0, 0.0)
    target_ms = cc.target_us / 1000
    now = 1.0
    while not cc.competing:
        _ack_round(cc, now, target_ms * 5)
        now += 0.1
    cc.cwnd = cc.ssthresh = 80.0
    # The competitor stays: the slowdown ends on time and the window comes back.
    now += config.foreground_probe_interval
    _ack_round(cc, now, target_ms * 5)
    assert cc.cwnd == cc.min_cwnd and cc.probes == 1
    cc.on_ack(1, 0, now + 2.0, BASE_US + int(target_ms * 5000))
    assert cc.competing and cc.cwnd >= 80.0
    # The competitor left: in the next slowdown the queue drains, back to delay mode.
    now += 2.0 + config.foreground_probe_interval
    _ack_round(cc, now, target_ms * 5)
    assert cc.cwnd == cc.min_cwnd and cc.probes == 2
    cc.on_ack(1, 0, now + 0.1, BASE_US)
    cc.on_ack(1, 0, now + 0.1, BASE_US)
    cc.on_ack(1, 0, now + 0.1, BASE_US)
    cc.on_ack(1, 0, now + 0.1, BASE_US)
    assert not cc.competing
    assert cc.cwnd >= 30.0


def test_foreground_does_not_take_random_loss_on_an_empty_path_for_congestion() -> None:
    cc = DelayReno(_config())
    _ack_round(cc, 0.0, 0.0)
    assert not cc.loss_is_congestion(lost=50, sent=1000)  # 5%, no queue
    assert cc.loss_is_congestion(lost=150, sent=1000)  # beyond the tolerance
    _ack_round(cc, 0.1, 15.0, rounds=4)
    assert cc.loss_is_congestion(lost=1, sent=1000)  # a queue: a drop-tail overflow


def test_foreground_at_its_target_does_not_take_random_loss_for_a_full_buffer() -> None:
    """A flow holding the queue at TARGET, below what the path's buffer held in its slow
    start: a loss there is random (a WiFi link, a bad cable), not a drop-tail overflow;
    at the buffer's top again it is."""
    cc = DelayReno(_config())
    target_ms = cc.target_us / 1000
    _ack_round(cc, 0.0, 0.0)
    _ack_round(cc, 0.1, 2.5 * target_ms, rounds=4)  # slow start overshot: a 75 ms queue
    _ack_round(cc, 0.5, target_ms, rounds=4)  # back at its target
    assert not cc.loss_is_congestion(lost=1, sent=1000)
    _ack_round(cc, 0.9, 2.4 * target_ms, rounds=4)  # at the buffer's top again
    assert cc.loss_is_congestion(lost=1, sent=1000)
    _ack_round(cc, 5.0, target_ms, rounds=4)  # the peak is forgotten: the buffer now
    assert cc.loss_is_congestion(lost=1, sent=1000)  # ends here (another bottleneck)


def test_ledbat_slow_start_doubles_per_round_trip_with_stretch_acks() -> None:
    # RFC 6817's ALLOWED_INCREASE, counted per ACK, capped growth at 1 packet per
    # 16-packet ACK: 6% per round trip instead of 100%.
    cc = Ledbat(_config())
    _ack_round(cc, 0.0, 0.0)
    start = cc.cwnd
    for step in range(3):
        _ack_round(cc, 0.2 * (step + 1), 0.0)
    assert cc.cwnd >= 4 * start


def test_ledbat_refills_an_empty_path_faster_than_a_packet_per_round_trip() -> None:
    cc = Ledbat(_config())
    _ack_round(cc, 0.0, 0.0)
    cc.cwnd = cc.ssthresh = 200.0
    for step in range(10):
        _ack_round(cc, 0.2 * step, 0.0)
    assert cc.cwnd > 200 * 1.1**10 * 0.9  # ~1/8 of slow start: +12.5% per round trip
    # At its target it holds, above it it gives way within a few round trips.
    target_ms = cc.target_us / 1000
    cc.cwnd = 200.0
    for step in range(3):
        _ack_round(cc, 3.0 + 0.2 * step, 3 * target_ms)
    assert cc.cwnd < 200 / 4


def test_ledbat_keeps_its_window_through_a_batch_of_acks() -> None:
    # A busy sender reads a window's ACKs at once, sending nothing between them: the
    # flight falls to nothing while the path is as full as before. RFC 6817's
    # max_allowed_cwnd bounds the window's growth by the flight, and must not cut it:
    # cut to what the batch's last ACK left (16 + 16), the window no longer fills the
    # path (issue 9, the lab's shoal alone at 73-89% of the link).
    cc = Ledbat(_config())
    _ack_round(cc, 0.0, 0.0)
    cc.cwnd = cc.ssthresh = 64.0
    for ack in range(4):
        cc.on_ack(16, 64 - 16 * (ack + 1), 1.0, BASE_US + 5_000, srtt=0.015)
    assert cc.cwnd >= 64.0
    # ... and its growth is still bounded by the flight (the window is not in use).
    for step in range(20):
        cc.on_ack(4, 4, 1.1 + 0.02 * step, BASE_US, srtt=0.015)
    assert cc.cwnd < 70.0


def test_ack_carries_the_least_delay_of_the_packets_it_covers() -> None:
    network = Network(seed=1)
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    chunk = _chunks(1, length=20 * TransferConfig().segment_size)[0]
    engine = receiver.engine
    now = network.now
    request_id = engine.request_chunk(
        sender.address, CONTENT_ID, 0, len(chunk), hashlib.sha256(chunk).digest(),
        Mode.FOREGROUND, now,
    )  # fmt: skip
    engine.datagrams_to_send(now)
    size = TransferConfig().segment_size
    now_us = int(now * 1_000_000)
    for packet_number, delay_us in enumerate((9_000, 2_000, 5_000)):
        header = DATA_HEADER.pack(
            MAGIC, PROTOCOL_VERSION, MessageType.DATA, request_id, packet_number,
            packet_number, (now_us - delay_us) & 0xFFFFFFFF,
        )  # fmt: skip
        engine.receive_datagram(header + chunk[packet_number * size : (packet_number + 1) * size],
                                sender.address, now)  # fmt: skip
    later = now + 1.0
    engine.handle_timer(later)
    acks = [
        message
        for data, _ in engine.datagrams_to_send(later)
        if isinstance(message := decode_datagram(data), Ack)
    ]
    assert acks and acks[-1].one_way_delay_us == 2_000


def _share_link(
    cc: Ledbat, competitor_window: float, seconds: float, start: float,
    capacity: float = 4000.0, base_rtt: float = 0.002,
) -> tuple[float, float]:  # fmt: skip
    """A fluid link of ``capacity`` packets/s shared with a window-limited flow of
    ``competitor_window`` packets (BBR caps its window near twice the path's
    bandwidth-delay product and keeps that little queue); round by round, each flow's
    rate is its window over the round trip the two windows make. Returns the two
    flows' mean rates (packets/s) over the second half."""
    now = start
    carried = [0.0, 0.0]
    while now < start + seconds:
        windows = (cc.cwnd, competitor_window)
        queue = max(0.0, sum(windows) / capacity - base_rtt)
        rtt = base_rtt + queue
        window = max(1, int(cc.cwnd))
        acks = (window + 15) // 16  # an ACK per 16 packets (ack_every_packets)
        for ack in range(acks):
            acked = min(16, window - 16 * ack)
            cc.on_ack(acked, window - acked, now + rtt * ack / acks,
                      BASE_US + int(queue * 1e6), srtt=rtt)  # fmt: skip
        if now >= start + seconds / 2:
            carried[0] += windows[0]
            carried[1] += windows[1]
        now += rtt
    half = seconds / 2
    return carried[0] / half, carried[1] / half


def test_ledbat_yields_to_a_flow_that_keeps_less_queue_than_its_target() -> None:
    # Alone the competitor keeps 6 ms of queue, below the 10 ms TARGET: the queue never
    # tells LEDBAT to give way; its falling share of the link does.
    capacity, base_rtt = 4000.0, 0.002
    competitor_window = capacity * (base_rtt + 0.006)
    cc = Ledbat(_config())
    alone, _ = _share_link(cc, 0.0, 10.0, 0.0)
    assert alone > 0.9 * capacity
    ledbat, competitor = _share_link(cc, competitor_window, 20.0, 10.0)
    assert competitor >= 0.9 * capacity  # what it carries alone
    assert ledbat < 0.1 * capacity
    # The competitor leaves: the path empties and the background flow fills it again.
    alone_again, _ = _share_link(cc, 0.0, 20.0, 30.0)
    assert alone_again > 0.9 * capacity
