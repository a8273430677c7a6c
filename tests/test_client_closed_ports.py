"""A hostile LAN host forging ICMP port-unreachable errors (``PeerPortClosed``): it can
set a peer aside for at most ``HOLD`` seconds per error, and the table of closed ports
stays bounded however many sources it forges."""

from __future__ import annotations

from shoal.client.closed_ports import HOLD, MAX_CLOSED, ClosedPorts
from shoal.client.config import AgentConfig
from shoal.client.download import Download
from shoal.client.partials import Partials
from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.protocol.swarm import ChunkPicker
from shoal.protocol.transfer import Address, Mode, TransferEngine

SERVER: Address = ("10.0.0.1", 41442)
HONEST: Address = ("10.1.0.2", 41442)
OTHER: Address = ("10.1.0.3", 41442)


def test_a_flood_of_forged_port_errors_sets_a_peer_aside_for_at_most_hold() -> None:
    download = Download(ContentId(b"\x01" * 32), False, 0.0)
    picker: ChunkPicker[Address] = ChunkPicker(  # as the client builds it: BUSY waits count
        ChunkSet(64), max_in_flight_per_peer=4, rate_horizon=AgentConfig.rate_horizon
    )
    download.picker = picker
    for peer in (HONEST, OTHER):
        picker.peer_has(peer, ChunkSet.full(64))
    engines = {mode: TransferEngine(now=0.0) for mode in Mode}
    closed = ClosedPorts()
    forged = [(f"10.{n // 250 % 250}.{n % 250}.9", 41442) for n in range(5_000)]
    for source in [*forged, HONEST]:
        closed.closed(source, [download], engines, lambda mode: SERVER, Partials(), 0.0)

    asked_meanwhile = {peer for peer, _ in picker.next_requests(now=HOLD / 2)}
    assert asked_meanwhile == {OTHER}, "the other holder serves while one is set aside"
    picker.wake(HOLD + 0.01)
    asked_after = {peer for peer, _ in picker.next_requests(now=HOLD + 0.01)}
    assert HONEST in asked_after, "a forged error sets a live peer aside for HOLD at most"
    assert len(closed._until) <= MAX_CLOSED  # the bound is the point
