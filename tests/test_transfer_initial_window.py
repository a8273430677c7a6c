"""A transfer's start: at most 10 packets back to back before the round trip is known,
then (foreground) a window paced over it of up to 32 packets on a long round trip, so a
chunk over a long WAN takes fewer round trips of slow start (issue 9: the start of a
download)."""

from __future__ import annotations

from shoal.protocol.transfer import ChunkReceived, Mode, TransferConfig
from shoal.protocol.transfer.congestion import DelayReno
from shoal.protocol.transfer.flow import Flow
from test_transfer import CONTENT_ID, _chunks
from transfer_link import Network, Node

#: A 100 Mbit/s WAN with a 100 ms round trip and a 1 s buffer: slow start, not the
#: rate, sets how long a chunk takes.
WAN = {"delay": 0.05, "rate": 12_500_000.0, "queue_bytes": 12_500_000}
CONFIG = TransferConfig()
BIG = _chunks(1, length=256 * 1024)[0]


def _link() -> tuple[Network, Node, Node]:
    network = Network(seed=1, **WAN)  # type: ignore[arg-type]
    return network, network.add("10.0.0.1"), network.add("10.0.0.2")


def _fetch(network: Network, receiver: Node, sender: Node, index: int, data: bytes) -> float:
    """Seconds from asking for chunk ``index`` to holding it."""
    chunk_hash = sender.serve(CONTENT_ID, index, data)
    asked = network.now
    request_id = receiver.engine.request_chunk(
        sender.address, CONTENT_ID, index, len(data), chunk_hash, Mode.FOREGROUND, asked
    )
    network.run(lambda: any(e.request_id == request_id for e in receiver.events_of(ChunkReceived)))
    return network.now - asked


def test_a_flow_sends_no_more_than_the_initial_window_before_its_first_ack() -> None:
    network, receiver, sender = _link()
    chunk_hash = sender.serve(CONTENT_ID, 0, BIG)
    receiver.engine.request_chunk(
        sender.address, CONTENT_ID, 0, len(BIG), chunk_hash, Mode.FOREGROUND, network.now
    )
    flows = sender.engine._sender.flows
    key = (receiver.address, Mode.FOREGROUND)
    most_in_flight = 0
    while sender.engine.flow_srtt(*key) is None:
        assert network.step()
        if key in flows:
            most_in_flight = max(most_in_flight, flows[key].in_flight)
    assert 0 < most_in_flight <= CONFIG.initial_window_packets


def test_a_chunk_from_a_peer_whose_round_trip_is_known_starts_from_the_paced_window() -> None:
    network, receiver, sender = _link()
    _fetch(network, receiver, sender, 0, b"a small document")  # the flow learns its RTT
    seconds = _fetch(network, receiver, sender, 1, BIG)
    # 190 packets: 32 + 64 + 128 in three round trips (from 10: 10 + 20 + 40 + 80 + 160,
    # five, 0.5 s), plus the request's half round trip and the last ACK's delay.
    assert seconds < 0.4, f"{seconds:.3f} s for 256 KiB over a 100 ms round trip"


def test_a_foreground_flow_starts_larger_only_on_a_long_round_trip() -> None:
    for mode, rtt, window in (
        (Mode.FOREGROUND, 0.1, CONFIG.paced_initial_window_packets),  # 50 -> at most 32
        (Mode.FOREGROUND, 0.04, 20),  # 500 packets/s for 40 ms
        (Mode.FOREGROUND, 0.002, CONFIG.initial_window_packets),  # a LAN: never below 10
        (Mode.BACKGROUND, 0.1, CONFIG.initial_window_packets),  # LEDBAT keeps RFC 6928's
    ):
        flow = Flow((("10.0.0.1", 7000), mode), CONFIG, 0.0)
        assert flow.cc.cwnd == CONFIG.initial_window_packets  # no RTT sample yet
        flow.on_rtt_sample(rtt)
        assert flow.cc.cwnd == window, (mode, rtt)
        flow.on_rtt_sample(rtt)
        assert flow.cc.cwnd == window  # only the first sample sets the start


def test_a_sender_that_knows_the_path_starts_at_its_rate_after_the_first_round_trip() -> None:
    """The server knows an office's WAN from its link profile: its flow to a holder
    starts at that rate's window (paced over the round trip), not from 32 packets."""
    network, receiver, sender = _link()
    sender.path_rate = WAN["rate"]
    _fetch(network, receiver, sender, 0, b"a small document")  # the flow learns its RTT
    seconds = _fetch(network, receiver, sender, 1, BIG)
    # 190 packets in the first round trip (1250 fit), plus the request's half round trip.
    assert seconds < 0.25, f"{seconds:.3f} s for 256 KiB over a 100 ms round trip"


def test_a_known_path_moves_only_a_first_slow_start_unless_its_share_grows() -> None:
    flow = Flow((("10.0.0.1", 7000), Mode.FOREGROUND), CONFIG, 0.0)
    flow.know_path(1000.0)  # packets a second
    assert flow.cc.cwnd == CONFIG.initial_window_packets  # no round trip to size it by yet
    flow.on_rtt_sample(0.1)
    assert flow.cc.cwnd == 100
    flow.cc.ssthresh = 50.0  # left slow start (delay or loss): its own signals rule
    flow.cc.cwnd = 50.0
    flow.know_path(1000.0)
    assert flow.cc.cwnd == 50
    # The link's other flows ended (the server's other stripes into the office): the
    # share it may carry grew, and the window with it at once...
    flow.know_path(4000.0)
    assert flow.cc.cwnd == 400
    # ...but not while it competes with a loss-based flow: CUBIC's own growth rules.
    assert isinstance(flow.cc, DelayReno)
    flow.cc.competing = True
    flow.cc.cwnd = 50.0
    flow.know_path(8000.0)
    assert flow.cc.cwnd == 50


def test_a_sending_flow_told_a_higher_rate_carries_it_at_once() -> None:
    """The server's other stripes into the office finished: its flow to the last holder
    takes the WAN they left (``raise_path_rate``), not a packet per round trip more."""
    network, receiver, sender = _link()
    sender.path_rate = WAN["rate"] / 6  # one stripe of six
    _fetch(network, receiver, sender, 0, b"a small document")  # the flow learns its RTT
    chunk_hash = sender.serve(CONTENT_ID, 1, BIG)
    asked = network.now
    request_id = receiver.engine.request_chunk(
        sender.address, CONTENT_ID, 1, len(BIG), chunk_hash, Mode.FOREGROUND, asked
    )
    flows = sender.engine._sender.sending_flows
    network.run(lambda: bool(flows) and next(iter(flows.values())).rtt.srtt is not None)
    (flow,) = flows.values()
    flow.cc.ssthresh = flow.cc.cwnd = 20.0  # delay mode held it near its sixth
    sender.engine.raise_path_rate(["10.0.0.9"], WAN["rate"])  # another office's holder
    assert flow.cc.cwnd == 20
    sender.engine.raise_path_rate(["10.0.0.1", "10.0.0.9"], WAN["rate"])
    assert flow.cc.cwnd > 190  # the whole chunk in one round trip
    network.run(lambda: any(e.request_id == request_id for e in receiver.events_of(ChunkReceived)))
    assert network.now - asked < 0.35  # from 20 packets: about ten round trips (1 s)


def test_a_flow_that_knows_its_share_and_lost_at_it_overruns_a_short_queue_no_more() -> None:
    """A 10 Mbit/s WAN with a 200 ms round trip and 20 ms of queue (the simulator's cell
    19), a flow told the link's rate: once a loss episode has shown that the queue holds
    no more than that, the flow is paced at the rate at most, so it does not overrun
    the queue again and again (each time halving its window for several long round
    trips), and its window does not grow above what the rate carries."""
    rate = 1_250_000.0
    network = Network(seed=1, delay=0.1, rate=rate, queue_bytes=25_000)
    receiver, sender = network.add("10.0.0.1"), network.add("10.0.0.2")
    sender.path_rate = rate
    _fetch(network, receiver, sender, 0, b"a small document")  # the flow learns its RTT
    chunks = _chunks(9, length=256 * 1024)
    _fetch(network, receiver, sender, 1, chunks[0])
    path = network.path(sender, receiver)
    assert path.dropped > 0  # the window the rate gives at once, paced at slow start's 2x
    dropped = path.dropped
    seconds = sum(_fetch(network, receiver, sender, i + 2, c) for i, c in enumerate(chunks[1:]))
    assert path.dropped == dropped
    # 2 MiB is 1.68 s at the link's rate; each chunk also waits a round trip for its
    # request and its first ACK.
    assert seconds < 1.68 + 8 * 0.25, f"{seconds:.3f} s for 8 x 256 KiB"
    flow = sender.engine._sender.flows[(receiver.address, Mode.FOREGROUND)]
    assert flow.rtt.srtt is not None
    packets_per_round_trip = rate / CONFIG.segment_size * flow.rtt.srtt
    assert flow.cc.cwnd <= packets_per_round_trip * CONFIG.pacing_gain + 1
