"""Replay a receiver trace into this interpreter's build: the same input for every build.

``receiver_calls.py --record TRACE`` writes what a transfer receiver was given (each
wake-up: its time and the datagrams read, or a timer). This script feeds exactly that
to a fresh receiver of whichever ``shoal`` the interpreter imports, so two builds can be
compared on identical input, without the network, the sender or the machine's load:

* default: the ``TransferEngine`` alone, driven as the endpoint drives it (datagrams,
  events, ``datagrams_to_send``, ``get_timer``; timers);
* ``--endpoint``: through the real ``DatagramEndpoint`` (a fake socket; an asyncio loop
  that never runs, its clock set to the trace's, timers fired by hand) and the transfer
  benchmark's own fetcher (``Fetch``, which writes each chunk with ``os.pwrite``).

Time on a shared machine swings with its load; instruction counts do not. Run it under
callgrind, once as is and once with ``--setup-only`` (everything loaded, nothing
replayed), and subtract:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null PYTHON \\
        benchmarks/receiver_replay.py TRACE [--endpoint] [--setup-only]

("Collected : N" is the instruction count.) Without valgrind it prints the CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import socket
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from shoal.core.ids import ContentId
from shoal.net import DatagramEndpoint
from shoal.protocol.transfer import ChunkReceived, Mode, TransferConfig, TransferEngine

try:
    from shoal_dev.bench.transfer_peer import Fetch
except ImportError:  # builds before the development package (da36445)
    from shoal.bench.transfer_peer import Fetch  # type: ignore[no-redef]

SENDER = ("10.0.0.2", 47000)


class FakeUdp:
    """What the endpoint needs of a ``UdpSocket``: the trace's datagrams, sends counted."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a file descriptor
        self.inbox: list[tuple[bytes, tuple[str, int]]] = []
        self.unreachable: list[Any] = []
        self.send_failures: list[Any] = []
        self.sent = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[tuple[bytes, tuple[str, int]]]:
        batch, self.inbox = self.inbox, []
        return batch

    def send(self, datagrams: list[Any], index: int = 0) -> SimpleNamespace:
        self.sent += len(datagrams) - index
        return SimpleNamespace(next_index=len(datagrams), blocked_by=None)

    def close(self) -> None:
        self.sock.close()


def replay_endpoint(trace: dict[str, Any], descriptor: int, setup_only: bool) -> int:
    start, chunk_size, hashes = trace["start"], trace["chunk_size"], trace["hashes"]
    manifest = SimpleNamespace(
        content_id=ContentId(trace["content_id"]),
        chunk_count=len(hashes),
        chunk_size=chunk_size,
        chunk_hashes=hashes,
        chunk_length=lambda index: chunk_size,
    )
    clock = [start]
    engine = TransferEngine(config=TransferConfig(), now=start)
    loop = asyncio.new_event_loop()
    loop.time = lambda: clock[0]  # type: ignore[method-assign]
    udp = FakeUdp()
    fetch = Fetch(engine, manifest, SENDER, descriptor, trace["window"], loop)  # type: ignore[arg-type]
    endpoint = DatagramEndpoint(engine, udp, fetch.on_event, loop=loop)  # type: ignore[arg-type]
    timer = getattr(endpoint, "_timer", None)
    fire = timer._fire if timer is not None else endpoint._on_timer  # type: ignore[attr-defined]
    if setup_only:
        return 0
    fetch.request_more()
    endpoint.transmit()
    for at, batch in trace["trace"]:
        clock[0] = at
        if batch is not None:
            udp.inbox = [(datagram, SENDER) for datagram in batch]
            endpoint._on_readable()
        else:
            fire()
        # The loop never runs: its timer heap is dropped (the handles are fired by hand).
        loop._scheduled.clear()  # type: ignore[attr-defined]
        loop._timer_cancelled_count = 0  # type: ignore[attr-defined]
    endpoint.close()
    loop.close()
    return fetch.received


def replay_engine(trace: dict[str, Any], descriptor: int, setup_only: bool) -> int:
    start, chunk_size, hashes = trace["start"], trace["chunk_size"], trace["hashes"]
    content_id = ContentId(trace["content_id"])
    engine = TransferEngine(config=TransferConfig(), now=start)
    in_flight: dict[int, int] = {}
    to_request = list(range(len(hashes) - 1, -1, -1))
    received = 0

    def request_more(at: float) -> None:
        while len(in_flight) < trace["window"] and to_request:
            index = to_request.pop()
            request_id = engine.request_chunk(
                SENDER, content_id, index, chunk_size, hashes[index], Mode.FOREGROUND, at
            )
            in_flight[request_id] = index

    def transmit(at: float) -> None:
        nonlocal received
        while (event := engine.next_event()) is not None:
            index = in_flight.pop(event.request_id, None)
            if isinstance(event, ChunkReceived) and index is not None:
                received += 1
                os.pwrite(descriptor, event.data, 0)
                request_more(at)
        engine.datagrams_to_send(at)
        engine.get_timer()

    if setup_only:
        return 0
    request_more(start)
    transmit(start)
    for at, batch in trace["trace"]:
        if batch is not None:
            for datagram in batch:
                engine.receive_datagram(datagram, SENDER, at)
        else:
            engine.handle_timer(at)
        transmit(at)
    return received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", help="a file written by receiver_calls.py --record")
    parser.add_argument("--endpoint", action="store_true", help="through DatagramEndpoint")
    parser.add_argument("--setup-only", action="store_true", help="load, replay nothing")
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args()
    with open(options.trace, "rb") as stream:
        trace = pickle.load(stream)
    replay = replay_endpoint if options.endpoint else replay_engine
    with tempfile.TemporaryDirectory(prefix="receiver-replay-") as scratch:
        descriptor = os.open(os.path.join(scratch, "chunks"), os.O_WRONLY | os.O_CREAT, 0o600)
        for _ in range(options.repeat):
            began = time.process_time()
            received = replay(trace, descriptor, options.setup_only)
            spent = (time.process_time() - began) * 1000
            chunks = len(trace["hashes"])
            print(f"{received} of {chunks} chunks, {spent:.1f} ms CPU", file=sys.stderr)
        os.close(descriptor)


if __name__ == "__main__":
    main()
