"""In-process micro-benchmark of the transfer engine: two engines, datagrams passed in memory.

Measures the Python cost of the protocol alone (no sockets): payload MB/s through the
pair, and microseconds of engine time per datagram on each side. Figures are printed,
not asserted. Run: ``.venv/bin/python benchmarks/transfer_inmemory.py --size-mb 256``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import time

from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    ChunkReceived,
    ChunkRequested,
    Mode,
    TransferConfig,
    TransferEngine,
)

SENDER = ("10.0.0.2", 7000)
RECEIVER = ("10.0.0.1", 7000)


def run(size_mb: int, chunk_size: int, parallel: int, loss: float, mode: Mode) -> dict[str, float]:
    clock = time.perf_counter
    config = TransferConfig()
    sender = TransferEngine(config=config, now=clock())
    receiver = TransferEngine(config=config, now=clock())
    content_id = ContentId(hashlib.sha256(b"bench").digest())
    chunk = os.urandom(chunk_size)
    chunk_hash = hashlib.sha256(chunk).digest()
    chunk_count = size_mb * (1 << 20) // chunk_size
    rng = random.Random(7)
    next_chunk = 0
    received = 0
    sender_time = receiver_time = 0.0
    sender_datagrams = receiver_datagrams = 0
    start = clock()

    def request_more() -> None:
        nonlocal next_chunk
        while next_chunk < chunk_count and receiver.active_downloads < parallel:
            receiver.request_chunk(
                SENDER, content_id, next_chunk, chunk_size, chunk_hash, mode, clock()
            )
            next_chunk += 1

    request_more()
    while received < chunk_count:
        # Receiver: send requests/acks, then let the sender take them in.
        t0 = clock()
        outgoing = receiver.datagrams_to_send(t0)
        t1 = clock()
        receiver_time += t1 - t0
        for datagram, _ in outgoing:
            sender.receive_datagram(datagram, RECEIVER, t1)
        while (event := sender.next_event()) is not None:
            if isinstance(event, ChunkRequested):
                sender.send_chunk(event.peer, event.request_id, chunk, t1)
        timer = sender.get_timer()
        if timer is not None and timer <= t1:
            sender.handle_timer(t1)
        data = sender.datagrams_to_send(t1)
        t2 = clock()
        sender_time += t2 - t1
        sender_datagrams += len(data) + len(outgoing)
        for datagram, _ in data:
            if loss and rng.random() < loss:
                continue
            receiver.receive_datagram(datagram, SENDER, t2)
        while (event := receiver.next_event()) is not None:
            if isinstance(event, ChunkReceived):
                received += 1
        timer = receiver.get_timer()
        if timer is not None and timer <= t2:
            receiver.handle_timer(t2)
        request_more()
        t3 = clock()
        receiver_time += t3 - t2
        receiver_datagrams += len(data)
    elapsed = clock() - start
    payload = chunk_count * chunk_size
    counters = sender.counters
    return {
        "payload_mb_per_s": payload / elapsed / 1e6,
        "sender_us_per_datagram": sender_time / max(sender_datagrams, 1) * 1e6,
        "receiver_us_per_datagram": receiver_time / max(receiver_datagrams, 1) * 1e6,
        "retransmitted_percent": 100
        * counters.data_packets_retransmitted
        / max(counters.data_packets_sent, 1),
        "acks_per_100_data": 100 * receiver.counters.acks_sent / max(counters.data_packets_sent, 1),
        "elapsed_s": elapsed,
        "probes_per_1000_data": 1000 * counters.probes_sent / max(counters.data_packets_sent, 1),
        "congestion_events": counters.congestion_events,
        "final_cwnd": sender.flow_window(RECEIVER, mode) or 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=1 << 20)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--background", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    mode = Mode.BACKGROUND if args.background else Mode.FOREGROUND
    results = [
        run(args.size_mb, args.chunk_size, args.parallel, args.loss, mode) for _ in range(args.runs)
    ]
    for key in results[0]:
        values = [result[key] for result in results]
        print(
            f"{key:28s} best {max(values) if 'mb' in key else min(values):10.2f}  "
            f"spread {min(values):.2f}..{max(values):.2f}"
        )


if __name__ == "__main__":
    main()
