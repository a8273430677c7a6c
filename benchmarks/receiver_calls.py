"""The transfer receiver's work per MiB, on a virtual clock: calls, ACKs, wake-ups, CPU.

Two ``TransferEngine`` instances joined by a modelled link (a FIFO at ``--rate-mbit``
each way, as the transfer benchmark's HTB-shaped veth pair), driven as the asyncio
endpoint drives them: each arriving datagram is one wake-up (``receive_datagram``, then
the engine's events, ``datagrams_to_send`` and ``get_timer``), each timer one wake-up
(``handle_timer``, then the same), fired late by up to a millisecond as asyncio's epoll
sleep is. The receiver keeps ``--window`` chunk requests in flight, as
``shoal bench transfer``'s fetcher does. Only the receiver's calls are timed (and, with
``--profile``, profiled), so the figure is the receiver's Python cost without the
socket, the loop or the other process; the link makes both builds see the same arrival
pattern for the same engine behaviour.

Run it with any build's interpreter to compare builds (it imports whichever ``shoal``
that interpreter has):

    .venv/bin/python benchmarks/receiver_calls.py --rate-mbit 20 --size-mb 32
    /work/wt-old/.venv/bin/python benchmarks/receiver_calls.py --rate-mbit 20 --size-mb 32

Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import heapq
import os
import pickle
import pstats
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from shoal.core.ids import ContentId
from shoal.protocol.transfer import (
    ChunkCorrupted,
    ChunkReceived,
    ChunkRefused,
    ChunkRequested,
    Mode,
    TransferConfig,
    TransferEngine,
    TransferTimedOut,
)

SENDER = ("10.0.0.2", 47000)
RECEIVER = ("10.0.0.1", 47000)
MIB = 1 << 20
#: IP + UDP header bytes on the wire per datagram.
OVERHEAD = 28


class Link:
    """One direction of the shaped link: a FIFO served at ``rate`` bytes a second."""

    def __init__(self, rate: float, delay: float) -> None:
        self.rate = rate
        self.delay = delay
        self.free_at = 0.0

    def arrival(self, now: float, size: int) -> float:
        start = max(now, self.free_at)
        self.free_at = start + (size + OVERHEAD) / self.rate
        return self.free_at + self.delay


class Side:
    """One engine and its shell's state: the armed timer, calls counted."""

    def __init__(self, engine: TransferEngine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.timer_at: float | None = None
        self.timer_version = 0
        self.calls: Counter[str] = Counter()


def run(options: argparse.Namespace, profiler: cProfile.Profile | None) -> dict[str, Any]:
    rate = options.rate_mbit * 1e6 / 8
    config = TransferConfig()
    chunk_size = options.chunk_size
    chunk_count = options.size_mb * 1_000_000 // chunk_size
    payload = os.urandom(chunk_size * min(chunk_count, 4))
    chunks = [payload[(i % 4) * chunk_size : (i % 4 + 1) * chunk_size] for i in range(chunk_count)]
    hashes = [hashlib.sha256(chunk).digest() for chunk in chunks]
    content_id = ContentId(hashlib.sha256(b"receiver-calls").digest())
    start = 1000.0
    sender = Side(TransferEngine(config=config, now=start), "sender")
    receiver = Side(TransferEngine(config=config, now=start), "receiver")
    to_receiver = Link(rate, options.delay)
    to_sender = Link(rate, options.delay)
    lateness = random.Random(options.seed)
    queue: list[tuple[float, int, str, Any]] = []
    sequence = 0

    def schedule(at: float, kind: str, item: Any) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(queue, (at, sequence, kind, item))

    to_request = list(range(chunk_count - 1, -1, -1))
    in_flight: dict[int, int] = {}
    received = 0
    spent = 0.0
    clock = time.process_time

    def request_more(now: float) -> None:
        while len(in_flight) < options.window and to_request:
            index = to_request.pop()
            request_id = receiver.engine.request_chunk(
                SENDER, content_id, index, chunk_size, hashes[index], Mode.FOREGROUND, now
            )
            in_flight[request_id] = index

    def on_receiver_event(event: object, now: float) -> None:
        nonlocal received
        if isinstance(event, ChunkReceived):
            if in_flight.pop(event.request_id, None) is not None:
                received += 1
        elif isinstance(event, ChunkCorrupted | ChunkRefused | TransferTimedOut):
            index = in_flight.pop(event.request_id, None)
            if index is not None:
                to_request.append(index)
        else:
            return
        request_more(now)

    def on_sender_event(event: object, now: float) -> None:
        if isinstance(event, ChunkRequested):
            sender.engine.send_chunk(event.peer, event.request_id, chunks[event.chunk_index], now)

    def transmit(side: Side, now: float, link: Link, kind: str) -> None:
        engine = side.engine
        handler = on_receiver_event if side is receiver else on_sender_event
        while (event := engine.next_event()) is not None:
            handler(event, now)
        datagrams = engine.datagrams_to_send(now)
        side.calls["datagrams_to_send"] += 1
        for datagram, _ in datagrams:
            schedule(link.arrival(now, len(datagram)), kind, datagram)
        side.calls["datagrams_sent"] += len(datagrams)
        deadline = engine.get_timer()
        side.calls["get_timer"] += 1
        if deadline != side.timer_at:
            side.timer_at = deadline
            side.timer_version += 1
            if deadline is not None:
                # asyncio sleeps in whole milliseconds: up to 1 ms late, unless woken sooner
                late = lateness.random() * options.max_late if deadline > now else 0.0
                schedule(max(deadline, now) + late, "timer-" + side.name, side.timer_version)

    def timed(step: Callable[[], None]) -> None:
        nonlocal spent
        if profiler is not None:
            profiler.enable()
        began = clock()
        step()
        spent += clock() - began
        if profiler is not None:
            profiler.disable()

    def receiver_start() -> None:
        request_more(start)
        transmit(receiver, start, to_sender, "to-sender")

    timed(receiver_start)
    now = start
    inbox: list[bytes] = []
    trace: list[tuple[float, list[bytes] | None]] = []
    wake_pending = False
    while received < chunk_count:
        if not queue:
            raise SystemExit("stalled: nothing scheduled")
        now, _, kind, item = heapq.heappop(queue)
        if now - start > options.timeout:
            raise SystemExit(f"timed out with {received} of {chunk_count} chunks")
        if kind == "to-receiver":
            inbox.append(item)
            if not wake_pending:
                wake_pending = True
                schedule(now + options.wake_latency, "wake-receiver", None)
        elif kind == "wake-receiver":
            wake_pending = False
            batch, inbox[:] = list(inbox), []

            def receiver_datagrams(datagrams: list[bytes] = batch, at: float = now) -> None:
                engine = receiver.engine
                for datagram in datagrams:
                    engine.receive_datagram(datagram, SENDER, at)
                transmit(receiver, at, to_sender, "to-sender")

            receiver.calls["wakeups_datagram"] += 1
            trace.append((now, batch))
            timed(receiver_datagrams)
        elif kind == "timer-receiver":
            if item != receiver.timer_version:
                continue
            receiver.timer_at = None

            def receiver_timer(at: float = now) -> None:
                receiver.engine.handle_timer(at)
                transmit(receiver, at, to_sender, "to-sender")

            receiver.calls["wakeups_timer"] += 1
            trace.append((now, None))
            timed(receiver_timer)
        elif kind == "to-sender":
            sender.engine.receive_datagram(item, RECEIVER, now)
            transmit(sender, now, to_receiver, "to-receiver")
        elif kind == "timer-sender":
            if item != sender.timer_version:
                continue
            sender.timer_at = None
            sender.engine.handle_timer(now)
            transmit(sender, now, to_receiver, "to-receiver")
    mib = chunk_count * chunk_size / MIB
    counters = receiver.engine.counters
    figures: dict[str, Any] = {
        "virtual_seconds": now - start,
        "MB/s (virtual)": chunk_count * chunk_size / (now - start) / 1e6,
        "receiver CPU ms per MiB": spent * 1000 / mib,
        "datagrams received /MiB": counters.datagrams_received / mib,
        "wake-ups on datagrams /MiB": receiver.calls["wakeups_datagram"] / mib,
        "wake-ups on timer /MiB": receiver.calls["wakeups_timer"] / mib,
        "get_timer /MiB": receiver.calls["get_timer"] / mib,
        "ACKs sent /MiB": counters.acks_sent / mib,
        "datagrams sent /MiB": receiver.calls["datagrams_sent"] / mib,
        "sender retransmitted": sender.engine.counters.data_packets_retransmitted,
    }
    if options.record is not None:
        with open(options.record, "wb") as record:
            pickle.dump(
                {
                    "start": start,
                    "chunk_size": chunk_size,
                    "hashes": hashes,
                    "content_id": content_id.digest,
                    "window": options.window,
                    "trace": trace,
                },
                record,
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate-mbit", type=float, default=20.0)
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=MIB)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.00005, help="one-way, seconds")
    parser.add_argument("--max-late", type=float, default=0.001, help="timer lateness, s")
    parser.add_argument("--timeout", type=float, default=600.0, help="virtual seconds")
    parser.add_argument(
        "--wake-latency",
        type=float,
        default=0.0,
        help="seconds from a datagram's arrival to the receiver's wake-up (a loaded host); "
        "what arrives meanwhile is read in the same wake-up",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--record", help="pickle the receiver's inputs (a replay trace) here")
    parser.add_argument("--profile", action="store_true", help="cProfile the receiver's calls")
    parser.add_argument("--top", type=int, default=40)
    options = parser.parse_args()
    results = [run(options, None) for _ in range(options.runs)]
    for key in results[0]:
        values = [result[key] for result in results]
        values.sort()
        median = values[len(values) // 2]
        print(f"{key:28s} median {median:10.3f}  [{values[0]:.3f}-{values[-1]:.3f}]")
    if options.profile:  # one more run, profiled (its time is not among the figures)
        profiler = cProfile.Profile()
        run(options, profiler)
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(options.top)


if __name__ == "__main__":
    main()
