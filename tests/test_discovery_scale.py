"""Discovery in a large office: traffic per chunk and per query is bounded by the
neighbour count, not the office's size, and a new chunk still reaches its fetchers."""

from __future__ import annotations

import random

from shoal.core.chunkset import ChunkSet
from shoal.core.ids import ContentId
from shoal.protocol.discovery import DiscoveryConfig, DiscoveryMachine, PeerAvailable
from shoal.protocol.fanout import fanout_score
from shoal_dev.sim.network import SimNetwork

PORT = 41800
CONTENT = ContentId(bytes(range(32)))
SUBNET = "10.1.0"


def office_of(count: int) -> tuple[SimNetwork, list[DiscoveryMachine]]:
    network = SimNetwork(seed=5)
    office = network.add_office("branch", f"{SUBNET}.0/24", wan_rate=1e6)
    machines = []
    for number in range(1, count + 1):
        ip = f"{SUBNET}.{number}"
        config = DiscoveryConfig(PORT, f"{SUBNET}.255", (f"{SUBNET}.0/24",), (ip,))
        machine = DiscoveryMachine(config, now=0, rng=random.Random(number))
        network.bind(network.add_host(office, ip), PORT, machine)
        machines.append(machine)
    return network, machines


def heard(machine: DiscoveryMachine) -> list[PeerAvailable]:
    collected = []
    while (event := machine.next_event()) is not None:
        if isinstance(event, PeerAvailable):
            collected.append(event)
    return collected


def run(network: SimNetwork, machine: DiscoveryMachine, until: float) -> None:
    ip = next(ip for ip, host in network.hosts.items() if PORT in host.machines and
              host.machines[PORT] is machine)  # fmt: skip
    network.pump(network.hosts[ip])
    network.run(until=until)


def searching_office(seekers: int) -> tuple[SimNetwork, DiscoveryMachine, list[DiscoveryMachine]]:
    """One holder (the office's rendezvous point) and ``seekers`` that searched at 0."""
    network, (holder, *others) = office_of(seekers + 1)
    holder.set_holding(CONTENT, ChunkSet(16, [0]), now=0)
    for seeker in others:
        seeker.search(CONTENT, now=0, chunk_count=16)
        run(network, seeker, 0.0)
    network.run(until=0.2)
    for seeker in others:
        heard(seeker)
    return network, holder, others


def test_a_push_round_reaches_at_most_the_neighbours_and_every_seeker_hears_soon() -> None:
    """30 seekers asked: each new chunk costs the holder 8 pushes, not 30, and every
    seeker still hears of it within one query interval (its next query is answered)."""
    network, holder, seekers = searching_office(30)
    pushes_before = holder.counters.pushes_sent
    holder.chunk_added(CONTENT, 1, 16, now=network.now)
    run(network, holder, network.now + 0.1)
    assert holder.counters.pushes_sent - pushes_before == holder.config.neighbours
    told = [seeker for seeker in seekers if any(1 in e.chunks for e in heard(seeker))]
    assert len(told) == holder.config.neighbours
    network.run(until=1.2)  # every seeker (holding nothing) queried again at 1.0
    for seeker in seekers:
        if seeker not in told:
            assert any(1 in event.chunks for event in heard(seeker))


def test_a_chunk_new_in_the_office_is_pushed_to_the_downloader_the_picker_designates() -> None:
    """The picker lets only the top-ranked downloader (``fanout_score``) fetch a chunk
    from its only holder at once; the others wait for it. That downloader must hear of
    the chunk in the first push round, or the chunk waits ``fanout_grace`` for nobody."""
    network, holder, seekers = searching_office(30)
    for chunk_index in range(1, 6):
        holder.chunk_added(CONTENT, chunk_index, 16, now=network.now, new_in_office=True)
        run(network, holder, network.now + 0.1)
        ranked = sorted(
            seekers, key=lambda s: -fanout_score(chunk_index, s.config.local_addresses[0])
        )
        told = [s for s in seekers if any(chunk_index in e.chunks for e in heard(s))]
        assert ranked[0] in told


def test_a_query_among_many_holders_draws_a_few_answers_not_one_per_holder() -> None:
    """20 holders that know of each other: a newcomer's query is answered by about
    ``answers_per_query`` of them (each answers with probability 4/20)."""
    network, (*holders, newcomer) = office_of(21)
    for holder in holders:
        holder.set_holding(CONTENT, ChunkSet(16, range(16)), now=0)
        holder.search(CONTENT, now=0, chunk_count=16)  # they hear of each other
        run(network, holder, 0.0)
    network.run(until=2.5)
    assert all(len(holder._holdings[CONTENT].holders) >= 10 for holder in holders)
    answered_before = sum(holder.counters.queries_answered for holder in holders)
    newcomer.search(CONTENT, now=network.now, chunk_count=16)
    run(network, newcomer, network.now + 0.3)
    answerers = {event.peer for event in heard(newcomer)}
    answered = sum(holder.counters.queries_answered for holder in holders) - answered_before
    assert 1 <= len(answerers) <= 10
    assert answered <= 10
    assert sum(holder.counters.answers_suppressed for holder in holders) >= 10


def test_a_search_that_holds_a_chunk_and_knows_a_holder_queries_every_few_seconds() -> None:
    network, (seeker, holder) = office_of(2)
    holder.set_holding(CONTENT, ChunkSet(16, [0]), now=0)
    seeker.search(CONTENT, now=0, chunk_count=16)
    run(network, seeker, 3.5)
    assert seeker.counters.queries_sent == 4  # holding nothing: every second
    seeker.chunk_added(CONTENT, 0, 16, now=network.now)
    run(network, seeker, 23.5)
    settled = seeker.counters.queries_sent - 4
    assert 3 <= settled <= 6  # every 3.75 to 6.25 s, not 20 more


def test_a_settled_unicast_search_asks_a_few_listed_peers_not_all() -> None:
    """WiFi offices: the first queries go to every peer the server listed; once settled
    (it holds a chunk and heard of a holder), each query goes to ``neighbours`` of them."""
    network, (seeker, holder, *_rest) = office_of(40)
    listed = [f"{SUBNET}.{number}" for number in range(2, 41)]
    sent: list[tuple[float, str]] = []
    send = seeker.datagrams_to_send

    def counted(now: float) -> list[tuple[bytes, tuple[str, int]]]:
        datagrams = send(now)
        sent.extend((now, address[0]) for _, address in datagrams)
        return datagrams

    seeker.datagrams_to_send = counted  # type: ignore[method-assign]
    holder.set_holding(CONTENT, ChunkSet(16, [0]), now=0)
    seeker.set_holding(CONTENT, ChunkSet(16, [1]), now=0)
    seeker.search(CONTENT, now=0, unicast_peers=listed, chunk_count=16)
    run(network, seeker, 0.5)
    assert len({ip for _, ip in sent}) == len(listed)  # the first query: to everyone
    assert any(event.peer == holder.config.local_addresses[0] for event in heard(seeker))
    first = len(sent)
    run(network, seeker, 20.0)
    queries = seeker.counters.queries_sent - 1
    assert 2 <= queries <= 5  # settled: every 3.75 to 6.25 s
    assert len(sent) - first <= queries * seeker.config.neighbours + 2  # + token echoes


def test_a_complete_holder_of_chunks_from_the_server_answers_every_query() -> None:
    """20 holders that know of each other; one also received chunk 15, its last, from
    the server (over the WAN: it may be its only holder in the office, and complete, it
    pushes no more). Every downloader's query is answered by that one, not by 4 in 20 of
    the holders at random: a downloader that took over its stripe and missed its pushes
    would otherwise be refused the chunk by the server's delivery ledger until the hold
    lapses, and fetch it over the WAN again."""
    network, machines = office_of(25)
    holders, newcomers = machines[:20], machines[20:]
    for holder in holders:
        holder.set_holding(CONTENT, ChunkSet(16, range(15)), now=0)
        holder.search(CONTENT, now=0, chunk_count=16)
        run(network, holder, 0.0)
    network.run(until=2.5)
    wan_holder = holders[0]
    wan_holder.chunk_added(CONTENT, 15, 16, now=network.now, new_in_office=True)
    for newcomer in newcomers:
        newcomer.search(CONTENT, now=network.now, chunk_count=16)
        run(network, newcomer, network.now + 0.3)
        assert any(15 in event.chunks for event in heard(newcomer))
    assert sum(holder.counters.answers_suppressed for holder in holders) >= 10
