"""Two transfer engines on real UDP sockets (loopback), driven by the asyncio shell.

The outcome a user cares about: the chunks requested arrive whole, verified, and
equal to what the peer served, over the GSO/GRO fast path and over the plain path.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from shoal.core.packing import pack_bytes
from shoal.net import DatagramEndpoint, UdpConfig, UdpSocket
from shoal.protocol.transfer import (
    ChunkReceived,
    ChunkRequested,
    Mode,
    TransferEngine,
)

CHUNK_SIZE = 256 * 1024


def offload_available() -> bool:
    probe = UdpSocket.bind("127.0.0.1", 0)
    try:
        return probe.gso_enabled and probe.gro_enabled
    finally:
        probe.close()


async def transfer_package(
    package: bytes, config: UdpConfig, receive_loss: float = 0.0
) -> tuple[dict[int, bytes], DatagramEndpoint, DatagramEndpoint]:
    """Serve ``package`` from one engine, fetch every chunk with another."""
    loop = asyncio.get_running_loop()
    manifest = pack_bytes(package, CHUNK_SIZE)
    server_engine = TransferEngine(now=loop.time())
    client_engine = TransferEngine(now=loop.time())
    received: dict[int, bytes] = {}
    all_in = asyncio.Event()

    def serve(event: object) -> None:
        if isinstance(event, ChunkRequested):
            start = event.chunk_index * CHUNK_SIZE
            chunk = package[start : start + event.chunk_length]
            server_engine.send_chunk(event.peer, event.request_id, chunk, loop.time())

    def collect(event: object) -> None:
        if isinstance(event, ChunkReceived):
            received[event.chunk_index] = event.data
            if len(received) == manifest.chunk_count:
                all_in.set()

    server = DatagramEndpoint.open(
        server_engine, "127.0.0.1", 0, serve, config=config, receive_loss=receive_loss
    )
    client = DatagramEndpoint.open(
        client_engine, "127.0.0.1", 0, collect, config=config, receive_loss=receive_loss
    )
    try:
        for chunk_index in range(manifest.chunk_count):
            client_engine.request_chunk(
                server.local_address,
                manifest.content_id,
                chunk_index,
                manifest.chunk_length(chunk_index),
                manifest.chunk_hashes[chunk_index],
                Mode.FOREGROUND,
                loop.time(),
            )
        client.transmit()
        await asyncio.wait_for(all_in.wait(), timeout=20)
    finally:
        server.close()
        client.close()
    return received, server, client


def split(package: bytes) -> dict[int, bytes]:
    return {
        index: package[offset : offset + CHUNK_SIZE]
        for index, offset in enumerate(range(0, len(package), CHUNK_SIZE))
    }


PACKAGE = random.Random(3).randbytes(3 * CHUNK_SIZE + 12345)


@pytest.mark.skipif(not offload_available(), reason="this kernel has no UDP GSO/GRO")
def test_chunks_cross_loopback_over_gso_and_gro() -> None:
    received, server, client = asyncio.run(transfer_package(PACKAGE, UdpConfig()))
    assert received == split(PACKAGE)
    assert server.udp.gso_enabled, server.udp.offload_note
    # The data went out in GSO batches and came in as GRO buffers.
    assert server.udp.counters.gso_send_calls > 0
    assert server.udp.counters.send_calls < server.udp.counters.datagrams_sent
    assert client.udp.counters.gro_buffers > 0


def test_chunks_cross_loopback_over_plain_sockets() -> None:
    received, server, client = asyncio.run(transfer_package(PACKAGE, UdpConfig.plain()))
    assert received == split(PACKAGE)
    assert server.udp.counters.gso_send_calls == 0
    assert server.udp.counters.send_calls == server.udp.counters.datagrams_sent
    assert client.udp.counters.gro_buffers == 0


def test_chunks_cross_loopback_despite_receive_loss() -> None:
    received, server, client = asyncio.run(
        transfer_package(PACKAGE[: CHUNK_SIZE + 999], UdpConfig(), receive_loss=0.02)
    )
    assert received == split(PACKAGE[: CHUNK_SIZE + 999])
    assert server.loss.datagrams_dropped + client.loss.datagrams_dropped > 0
