"""Discovery on a simulated office: broadcast, answers, pushes, scope, versions, WiFi."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.protocol.discovery import (
    DiscoveryConfig,
    DiscoveryMachine,
    PeerAvailable,
    PeerSearching,
    PeerVersionRejected,
)
from shoal.wire.messages import Have, WhoHas, encode_datagram
from shoal_dev.sim.network import SimNetwork

PORT = 41800
CONTENT = ContentId(bytes(range(32)))


def office_of(
    count: int, *, subnet: str = "10.1.0", foreign: bool = False
) -> tuple[SimNetwork, list[DiscoveryMachine]]:
    network = SimNetwork(seed=3)
    office = network.add_office("branch", f"{subnet}.0/24", wan_rate=1e6)
    machines = []
    for number in range(1, count + 1):
        ip = f"{subnet}.{number}"
        config = DiscoveryConfig(PORT, f"{subnet}.255", (f"{subnet}.0/24",), (ip,))
        machine = DiscoveryMachine(config, now=0)
        network.bind(network.add_host(office, ip), PORT, machine)
        machines.append(machine)
    if foreign:
        other = network.add_office("other", "10.9.0.0/24", wan_rate=1e6)
        network.add_host(other, "10.9.0.1")
    return network, machines


def events(machine: DiscoveryMachine) -> list[object]:
    collected = []
    while (event := machine.next_event()) is not None:
        collected.append(event)
    return collected


def test_a_broadcast_query_finds_the_holders_of_the_office() -> None:
    network, (seeker, holder, bystander) = office_of(3)
    holder.set_holding(CONTENT, ChunkSet(8, [0, 3]), now=0)
    seeker.search(CONTENT, now=0)
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=0.5)
    found = events(seeker)
    assert found == [PeerAvailable("10.1.0.2", CONTENT, ChunkSet(8, [0, 3]), PORT)]
    assert holder.counters.queries_answered == 1
    assert bystander.counters.queries_answered == 0  # holds nothing: stays silent
    assert events(bystander) == []


def test_a_seeker_holding_nothing_is_known_to_the_other_seekers() -> None:
    """A client holding nothing answers no query; its own query tells the office's other
    downloaders that it searches (the picker serves it first), never a bystander."""
    network, (empty_handed, holder, bystander) = office_of(3)
    holder.set_holding(CONTENT, ChunkSet(8, [0]), now=0)
    holder.search(CONTENT, now=0)
    network.pump(network.hosts["10.1.0.2"])
    network.run(until=0.1)
    assert events(empty_handed) == []  # not searching: nothing to tell
    empty_handed.search(CONTENT, now=network.now)
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=0.3)
    assert PeerSearching("10.1.0.1", CONTENT, PORT) in events(holder)
    assert events(bystander) == []
    answers = events(empty_handed)  # the answer, and the one to the query echoing its token
    assert answers and set(answers) == {PeerAvailable("10.1.0.2", CONTENT, ChunkSet(8, [0]), PORT)}


def test_a_seeker_pushes_its_first_chunk_to_a_holder_that_asked_before_its_search() -> None:
    """The holder's query came before our search began (no interest recorded): its
    answer to our query makes it hear of our first chunk at once, not a second later at
    its next periodic query (until then it would take us for holding nothing)."""
    network, (seeker, holder) = office_of(2)
    holder.set_holding(CONTENT, ChunkSet(8, [0]), now=0)
    holder.search(CONTENT, now=0)
    network.pump(network.hosts["10.1.0.2"])
    network.run(until=0.1)
    seeker.search(CONTENT, now=network.now)
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=0.2)
    events(holder)
    seeker.chunk_added(CONTENT, 3, 8, now=network.now)
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=0.4)  # the holder's next periodic query is due at 1.0
    assert PeerAvailable("10.1.0.1", CONTENT, ChunkSet(8, [3]), PORT) in events(holder)
    assert seeker.counters.pushes_sent == 1


def a_seeker_that_heard_a_holder_of_chunk_0() -> tuple[
    SimNetwork, DiscoveryMachine, DiscoveryMachine
]:
    """Two clients of one office: the seeker (10.1.0.1) searched and heard the holder
    (10.1.0.2) hold chunk 0 of 4; its events so far are drained."""
    network, (seeker, holder) = office_of(2)
    holder.set_holding(CONTENT, ChunkSet(4, [0]), now=0)
    seeker.search(CONTENT, now=0)
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=0.2)
    events(seeker)
    return network, seeker, holder


def test_new_chunks_are_pushed_to_peers_that_asked() -> None:
    network, seeker, holder = a_seeker_that_heard_a_holder_of_chunk_0()
    holder.chunk_added(CONTENT, 1, 4, now=network.now)
    holder.chunk_added(CONTENT, 2, 4, now=network.now)  # coalesced into one push
    network.pump(network.hosts["10.1.0.2"])
    network.run(until=0.5)  # before the next periodic query at t=1
    assert events(seeker) == [PeerAvailable("10.1.0.2", CONTENT, ChunkSet(4, [0, 1, 2]), PORT)]
    assert holder.counters.pushes_sent == 1


def test_a_push_leaves_at_once_after_a_quiet_spell_and_at_most_once_per_interval() -> None:
    """A chunk relayed through the office waits for no push interval at each hop (the
    holder was quiet), yet a holder that gains chunks fast pushes at most once per
    ``push_interval``."""
    network, _seeker, holder = a_seeker_that_heard_a_holder_of_chunk_0()
    now = network.now
    holder.chunk_added(CONTENT, 1, 4, now=now)
    assert holder.get_timer() == now
    holder.handle_timer(now)
    assert holder.counters.pushes_sent == 1
    holder.chunk_added(CONTENT, 2, 4, now=now + 0.005)
    assert holder.get_timer() == pytest.approx(now + holder.config.push_interval)
    holder.handle_timer(now + 0.01)
    assert holder.counters.pushes_sent == 1


def test_a_chunk_few_peers_hold_is_pushed_at_once_even_within_the_interval() -> None:
    """The office's next hop waits for the news of a rare chunk (the relay's tail): it
    goes at once, whatever ``push_interval``; a chunk others hold waits for the round."""
    network, seeker, holder = a_seeker_that_heard_a_holder_of_chunk_0()
    host, rare = network.hosts["10.1.0.2"], holder.config.rare_holders

    def gain(chunk_index: int, holders: int | None = None) -> list[object]:
        holder.chunk_added(CONTENT, chunk_index, 4, now=network.now, holders=holders)
        network.pump(host)
        network.run(until=network.now + 0.005)
        return events(seeker)

    assert gain(1) == [PeerAvailable("10.1.0.2", CONTENT, ChunkSet(4, [0, 1]), PORT)]
    assert gain(2, holders=rare) == []  # within push_interval of the last push: waits
    assert gain(3, holders=rare - 1) == [
        PeerAvailable("10.1.0.2", CONTENT, ChunkSet(4, [0, 1, 2, 3]), PORT)
    ]
    assert holder.counters.pushes_sent == 2


def test_queries_repeat_ever_less_often_while_nobody_answers_until_the_search_stops() -> None:
    network, (seeker, _) = office_of(2)
    seeker.search(CONTENT, now=0)
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=12.5)
    assert seeker.counters.queries_sent == 5  # t = 0, 1, 3, 7, 12: doubling, up to 5 s
    seeker.stop_search(CONTENT)
    network.run(until=30)
    assert seeker.counters.queries_sent == 5


def test_queries_and_answers_from_outside_the_office_are_dropped() -> None:
    _, (seeker, _) = office_of(2, foreign=True)
    seeker.set_holding(CONTENT, ChunkSet(2, [0]), now=0)
    seeker.search(CONTENT, now=0)
    seeker.datagrams_to_send(0)
    foreign = ("10.9.0.1", PORT)
    seeker.receive_datagram(encode_datagram(WhoHas(1, CONTENT)), foreign, now=0)
    seeker.receive_datagram(encode_datagram(Have(1, CONTENT, ChunkSet(2, [1]))), foreign, now=0)
    assert seeker.counters.out_of_scope == 2
    assert seeker.datagrams_to_send(0) == []  # no answer leaves the office
    assert events(seeker) == []


def test_own_broadcasts_are_ignored() -> None:
    _, (seeker, _) = office_of(2)
    seeker.set_holding(CONTENT, ChunkSet(1, [0]), now=0)
    seeker.receive_datagram(encode_datagram(WhoHas(1, CONTENT)), ("10.1.0.1", PORT), now=0)
    assert seeker.counters.own_datagrams == 1
    assert seeker.datagrams_to_send(0) == []


def test_an_unsupported_version_gets_an_explicit_version_error() -> None:
    _network, (seeker, holder) = office_of(2)
    query = bytearray(encode_datagram(WhoHas(1, CONTENT)))
    query[2] = 9  # a future protocol version
    holder.receive_datagram(bytes(query), ("10.1.0.1", PORT), now=0)
    ((reply, destination),) = holder.datagrams_to_send(0)
    assert destination == ("10.1.0.1", PORT)
    seeker.receive_datagram(reply, ("10.1.0.2", PORT), now=0)
    assert events(seeker) == [PeerVersionRejected("10.1.0.2", 2, 3)]


def test_garbage_is_counted_never_raised() -> None:
    _, (seeker, _) = office_of(2)
    for garbage in (b"", b"SH", b"XXXX", b"SH\x02\x11" + b"\xff" * 40, bytes(2000)):
        seeker.receive_datagram(garbage, ("10.1.0.2", PORT), now=0)
    counted = seeker.counters
    assert counted.wrong_magic + counted.malformed == 5


def test_wifi_offices_query_listed_peers_by_unicast() -> None:
    network, (seeker, holder, bystander) = office_of(3)
    holder.set_holding(CONTENT, ChunkSet(2, [1]), now=0)
    bystander.set_holding(CONTENT, ChunkSet(2, [0]), now=0)
    seeker.search(CONTENT, now=0, unicast_peers=["10.1.0.2"])
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=0.5)
    assert [event.peer for event in events(seeker)] == ["10.1.0.2"]  # type: ignore[attr-defined]
    assert bystander.counters.queries_answered == 0


def test_a_restarted_holder_is_asked_back_and_pushes_to_a_settled_seeker() -> None:
    """A holder's process restarts (its record of who asked is gone); a seeker that
    settled (it re-queries every ~5 s) hears of its new chunks at once, not then."""
    network, (seeker, holder) = office_of(2)
    seeker.set_holding(CONTENT, ChunkSet(4, [0]), now=0)
    holder.set_holding(CONTENT, ChunkSet(4, [1]), now=0)
    for machine in (seeker, holder):
        machine.search(CONTENT, now=0)
    for ip in ("10.1.0.1", "10.1.0.2"):
        network.pump(network.hosts[ip])
    network.run(until=1.5)  # each heard of the other: the seeker's search settles at 1 s
    events(seeker)
    config = DiscoveryConfig(PORT, "10.1.0.255", ("10.1.0.0/24",), ("10.1.0.2",))
    restarted = DiscoveryMachine(replace(config, first_query_id=7), now=network.now)
    network.bind(network.hosts["10.1.0.2"], PORT, restarted)
    restarted.set_holding(CONTENT, ChunkSet(4, [1]), now=network.now)
    restarted.search(CONTENT, now=network.now)
    network.pump(network.hosts["10.1.0.2"])
    network.run(until=2.0)
    events(seeker)
    restarted.chunk_added(CONTENT, 2, 4, now=network.now)
    network.pump(network.hosts["10.1.0.2"])
    network.run(until=2.5)  # the seeker queries next at 4.75 s or later (settled)
    assert PeerAvailable("10.1.0.2", CONTENT, ChunkSet(4, [1, 2]), PORT) in events(seeker)


def test_a_wifi_peer_missing_from_the_list_is_asked_back_and_pushes_its_chunks() -> None:
    network, (early, late) = office_of(2)
    early.search(CONTENT, now=0, unicast_peers=[])  # its list predates the late peer
    late.search(CONTENT, now=0, unicast_peers=["10.1.0.1"])
    network.pump(network.hosts["10.1.0.1"])
    network.pump(network.hosts["10.1.0.2"])
    network.run(until=0.2)
    late.chunk_added(CONTENT, 0, 4, now=network.now)  # the late peer is the first holder
    network.pump(network.hosts["10.1.0.2"])
    network.run(until=0.5)  # before any periodic query or list refresh
    found = [e for e in events(early) if isinstance(e, PeerAvailable)]  # the push, and the
    # answer to the query that echoed its token (the late peer's queries: PeerSearching)
    assert found and all(
        event == PeerAvailable("10.1.0.2", CONTENT, ChunkSet(4, [0]), PORT) for event in found
    )
    assert late.counters.pushes_sent == 1


def test_a_seeker_that_echoes_the_token_gets_every_push_of_a_large_package() -> None:
    from shoal.wire.messages import MAX_HAVE_CHUNKS

    network, (seeker, holder) = office_of(2)
    holder.set_holding(CONTENT, ChunkSet(MAX_HAVE_CHUNKS, [0]), now=0)
    seeker.search(CONTENT, now=0, chunk_count=MAX_HAVE_CHUNKS)
    network.pump(network.hosts["10.1.0.1"])
    network.run(until=0.2)
    assert holder.counters.addresses_validated == 1  # the seeker echoed the HAVE's token
    events(seeker)
    for chunk_index in range(1, 6):  # 1,400-byte pushes, far beyond 3x the query
        holder.chunk_added(CONTENT, chunk_index, MAX_HAVE_CHUNKS, now=network.now)
        network.pump(network.hosts["10.1.0.2"])
        network.run(until=network.now + 0.05)
    pushed = events(seeker)
    assert len(pushed) == 5
    assert pushed[-1] == PeerAvailable(
        "10.1.0.2", CONTENT, ChunkSet(MAX_HAVE_CHUNKS, range(6)), PORT
    )
    assert holder.counters.amplification_limited == 0


def test_an_unpadded_query_for_a_large_package_gets_no_answer() -> None:
    from shoal.wire.messages import MAX_HAVE_CHUNKS

    _, (_, holder) = office_of(2)
    holder.set_holding(CONTENT, ChunkSet(MAX_HAVE_CHUNKS, [0]), now=0)
    holder.receive_datagram(encode_datagram(WhoHas(1, CONTENT)), ("10.1.0.1", PORT), now=0)
    assert holder.datagrams_to_send(0) == []
    assert holder.counters.amplification_limited == 1
