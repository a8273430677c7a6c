"""A sender on a slow uplink is not asked for data while its window is full or its
data all sent (issue 9: client CPU on slow links).

Every step of a host (a datagram in, a timer) asked each of its sending flows what it
may send; on a slow uplink most of those asks found the window full or nothing left
to send until an ACK, and sent nothing. Such a flow is now held until it changes (an
ACK, a timeout, a new chunk), and one its pacer holds back only has its bucket
refilled (the same arithmetic) until a token is due; the link is as busy as before,
to the bit.
"""

from __future__ import annotations

import pytest

from shoal.protocol.transfer import ChunkReceived, Mode
from shoal.protocol.transfer.sender import Sender
from test_transfer import CONTENT_ID, _chunks
from transfer_link import Network

#: 10 Mbit/s uplinks, 10 ms round trips, a 250 ms buffer (the lab grid's slow cells).
SLOW_UPLINK = {"delay": 0.005, "rate": 1_250_000.0, "queue_bytes": 312_500}
CHUNK_BYTES = 256 * 1024


@pytest.fixture
def send_steps(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the sender's per-flow send steps, and those that sent nothing."""
    counts = {"steps": 0, "empty": 0}
    original = Sender._send_flow

    def counted(self: Sender, flow: object, now: float, out: list[object]) -> None:
        before = len(out)
        original(self, flow, now, out)  # type: ignore[arg-type]
        counts["steps"] += 1
        counts["empty"] += len(out) == before

    monkeypatch.setattr(Sender, "_send_flow", counted)
    return counts


def test_a_slow_sender_serving_two_peers_keeps_its_link_busy_without_empty_asks(
    send_steps: dict[str, int],
) -> None:
    network = Network(seed=3, **SLOW_UPLINK)  # type: ignore[arg-type]
    sender = network.add("10.0.0.1")
    receivers = [network.add("10.0.0.2"), network.add("10.0.0.3")]
    chunks = _chunks(4, length=CHUNK_BYTES)
    for index, data in enumerate(chunks):
        chunk_hash = sender.serve(CONTENT_ID, index, data)
        receiver = receivers[index % 2]
        receiver.engine.request_chunk(
            sender.address, CONTENT_ID, index, len(data), chunk_hash, Mode.FOREGROUND, network.now
        )
    started = network.now
    network.run(lambda: sum(len(r.events_of(ChunkReceived)) for r in receivers) == len(chunks))
    seconds = network.now - started

    received = {e.chunk_index: bytes(e.data) for r in receivers for e in r.events_of(ChunkReceived)}
    assert received == dict(enumerate(chunks))
    # The uplink carries the four chunks at its rate (headers and slow start aside).
    ideal = len(chunks) * CHUNK_BYTES / SLOW_UPLINK["rate"]
    assert seconds < 1.15 * ideal, f"{seconds:.3f} s against {ideal:.3f} s at the link's rate"
    # A flow with a full window or nothing to send is not asked at every step of the
    # other's ACKs, and one its pacer holds back only has its bucket refilled until a
    # token is due: before, 1,224 of 1,616 full asks sent nothing here (now 56 of
    # 448), and the chunks took the same time to the bit.
    assert send_steps["empty"] < 0.25 * send_steps["steps"], send_steps
