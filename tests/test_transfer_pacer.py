"""The pacer's burst: 2 ms of the rate on a host that wakes on time, and what accrued
since the pacer's own deadline on one that wakes late (issue 9: multi-office on a busy
host, docs/network.md).

A flow at 500 packets a second (cwnd 20, srtt 50 ms, gain 1.25) may send 4 packets
back to back (2 ms of its rate is one packet; 4 is the least burst). Its pacer then
asks to be woken 2 ms later for the next packet. A process that waited for a CPU is
asked 20 ms after that deadline: 11 tokens have accrued, and the 2 ms cap threw 7 of
them away, at every late wake-up.
"""

from __future__ import annotations

import pytest

from shoal.protocol.transfer import TransferConfig
from shoal.protocol.transfer.pacer import Pacer

CWND = 20.0
SRTT = 0.05
ROOM = 100


def _paced_flow() -> Pacer:
    """A flow that sent its first burst at 0.0 and was held back by its pacer."""
    pacer = Pacer(TransferConfig(), now=0.0)
    budget = pacer.budget(0.0, ROOM, CWND, SRTT, in_slow_start=False)
    assert budget == 4  # 500 packets/s x 2 ms = 1, at least 4
    pacer.on_sent(0.0, budget, budget, ROOM)
    assert pacer.wait_until == pytest.approx(0.002)  # one packet's worth later
    return pacer


def test_a_flow_asked_at_its_deadline_sends_what_accrued() -> None:
    pacer = _paced_flow()
    assert pacer.budget(0.002, ROOM, CWND, SRTT, in_slow_start=False) == 1


def test_a_flow_asked_late_sends_what_accrued_since_its_deadline() -> None:
    pacer = _paced_flow()
    # 22 ms after the burst, 20 ms after the deadline: 11 tokens (4 before the change).
    assert pacer.budget(0.022, ROOM, CWND, SRTT, in_slow_start=False) == 11


def test_a_late_flow_sends_at_most_a_full_burst() -> None:
    pacer = _paced_flow()
    assert pacer.budget(1.0, ROOM, CWND, SRTT, in_slow_start=False) == 32


def test_a_flow_without_a_deadline_keeps_the_short_burst() -> None:
    # Held by its window or its data, not its pacer (no deadline): whatever accrued, a
    # burst of 2 ms of the rate (at least 4), as before -- the burst that keeps a
    # delay-based slow start from seeing its own queue.
    pacer = _paced_flow()
    pacer.wait_until = None
    assert pacer.budget(1.0, ROOM, CWND, SRTT, in_slow_start=False) == 4
